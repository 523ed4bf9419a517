"""Import TensorFlow once; under the `leuko` command, without its C++ start-up chatter.

TensorFlow 2.21 prints oneDNN, CUDA-probe and cuInit lines to file descriptor 2 before
its logging honours TF_CPP_MIN_LOG_LEVEL, and they would sit between leuko's progress
bars. Modules that need TensorFlow import this first. When the command line runs
(`quiet_tensorflow()` was called, by `leukocli.cli` only) the chatter is kept, and shown
only if the import itself fails, and TensorFlow's Python warnings are lowered to
errors. Imported as a library, leuko changes nothing in its caller's process: no file
descriptor redirected, no logger lowered. Set LEUKO_TF_VERBOSE=1 to see both anyway.
"""

from __future__ import annotations

import os
import sys

from ._tf_quiet import QUIET as _QUIET
from ._util.stderr import Held, holding_fd2


def _quiet_import() -> None:
    if ("tensorflow" in sys.modules or os.environ.get("LEUKO_TF_VERBOSE")
            or not _QUIET["on"]):
        return
    held = Held()
    try:
        with holding_fd2() as held:
            import keras  # noqa: F401
            import tensorflow

            tensorflow.config.list_physical_devices()  # the CUDA probe logs here
    except KeyboardInterrupt:
        raise  # Ctrl-C: the caller says so in one line; the chatter explains nothing
    except BaseException:
        sys.stderr.write(held.data.decode(errors="replace"))  # it explains the failure
        raise


_quiet_import()

import keras  # noqa: E402  (after the quiet import, on purpose)
import tensorflow as tf  # noqa: E402

if _QUIET["on"] and not os.environ.get("LEUKO_TF_VERBOSE"):
    # Python-side notes such as "N calls triggered tf.function retracing" (Grad-CAM runs
    # one small graph per image) are for TensorFlow developers, not for a leuko user.
    tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf"]
