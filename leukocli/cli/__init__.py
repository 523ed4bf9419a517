"""The `leuko` command line: a thin shell over the core, and the only layer that prints.

Nothing here imports TensorFlow at module level, so `leuko --help` stays instant; each
command imports the core it needs inside its body.
"""

from __future__ import annotations

from . import dedupe, demo, evaluate, predict, split, synth, train  # noqa: F401, I001 - registers, in workflow order
from .app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
