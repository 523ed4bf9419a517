"""leuko as a Python library: one function per command, silent, returning values.

Each function does what its command does, through the same core functions and checks
(the CLI modules add only rendering). Nothing is printed: progress and notes go to
`reporter` (silent by default; `leukocli._util.progress.Collecting` keeps them). What
the user can fix raises `leukocli.errors.LeukoError`; partial outcomes (unreadable
images) are part of the returned value, not an exception. TensorFlow loads only inside
the functions that build or run a model. Typed imports: `from leukocli.api import train`.

The functions live by what they work on: `data` (dedupe, split), `runs` (train,
cross_validate, audit), `models` (evaluate, load_model, predict, export, explain) and
`cells` (count, review); this package gathers them.
"""

from __future__ import annotations

from ._common import DEFAULT_MODEL as DEFAULT_MODEL
from ._common import PathLike as PathLike
from ._common import Paths as Paths
from .cells import count, review
from .data import EXCLUDE_FILE as EXCLUDE_FILE
from .data import dedupe, split
from .models import evaluate, explain, export, load_model, predict
from .runs import audit, cross_validate, train

__all__ = ["audit", "count", "cross_validate", "dedupe", "evaluate", "explain", "export",
           "load_model", "predict", "review", "split", "train"]
