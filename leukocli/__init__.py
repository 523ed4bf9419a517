"""leuko: white-blood-cell micrographs in, a trained classifier and honest reports out.

As a library: `import leukocli as lk; lk.train(...)`. The functions (see `leukocli.api`)
load on first use, so `import leukocli` stays light and imports no TensorFlow. A bad
value raises `lk.ParameterError` (a `ValueError` and an `lk.LeukoError`) naming the
parameter; every other problem a caller can fix is an `lk.LeukoError`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .errors import LeukoError, ParameterError

__version__ = "0.1.0"

_API = ("audit", "count", "cross_validate", "dedupe", "evaluate", "explain", "export",
        "load_model", "predict", "review", "split", "train")
__all__ = ["LeukoError", "ParameterError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    """`lk.train` and the rest, imported from `leukocli.api` when first asked for."""
    if name in _API:
        value = getattr(import_module(".api", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
