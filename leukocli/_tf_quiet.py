"""Whether TensorFlow should import quietly: the command line says so, a library caller
never does (see `_tf`). Kept apart from `_tf` because importing that imports TensorFlow."""

from __future__ import annotations

import os
import sys

QUIET = {"on": False}


def quiet_tensorflow() -> None:
    """The command line's choice, never the library's: TensorFlow imports quietly."""
    QUIET["on"] = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules and not os.environ.get("LEUKO_TF_VERBOSE"):
        # imported already (a caller ran the library first): its Python notes such as
        # "tf.function retracing" are still not for a leuko user
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")
