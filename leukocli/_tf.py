"""Import TensorFlow once, without its C++ start-up chatter on the user's terminal.

TensorFlow 2.21 prints oneDNN, CUDA-probe and cuInit lines to file descriptor 2 before
its logging honours TF_CPP_MIN_LOG_LEVEL, and they would sit between leuko's progress
bars. Modules that need TensorFlow import this first; the chatter is kept, and shown
only if the import itself fails; TensorFlow's Python warnings are lowered to errors.
Set LEUKO_TF_VERBOSE=1 to see both anyway.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _quiet_import() -> None:
    if "tensorflow" in sys.modules or os.environ.get("LEUKO_TF_VERBOSE"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow

            tensorflow.config.list_physical_devices()  # the CUDA probe logs here
        except KeyboardInterrupt:
            raise  # Ctrl-C: the caller says so in one line; the chatter explains nothing
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_quiet_import()

import keras  # noqa: E402  (after the quiet import, on purpose)
import tensorflow as tf  # noqa: E402

if not os.environ.get("LEUKO_TF_VERBOSE"):
    # Python-side notes such as "N calls triggered tf.function retracing" (Grad-CAM runs
    # one small graph per image) are for TensorFlow developers, not for a leuko user.
    tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf"]
