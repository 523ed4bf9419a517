"""How the core reports progress without printing: a Reporter the caller passes in.

Library calls are silent by default (SILENT); the command line passes a Rich one. This
is Rich's own pattern (the caller owns the console) and Keras's (`verbose=0` is quiet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import PYTHON, Spelling, spell

Advance = Callable[..., None]


class Reporter:
    """Receives progress, notes and warnings from long operations; does nothing itself.

    A note may name a parameter (errors.opt); the core writes it in the reporter's
    `spelling` (`spoken`), so a library caller reads `keep='best'` and the command line
    `--keep best`.
    """

    spelling: Spelling = PYTHON

    def info(self, message: str) -> None:
        """A note worth showing a person (what is being done, where results went)."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the work."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        """A counted step; call the yielded function with how many items were done."""
        yield _noop


def spoken(reporter: Reporter, message: str) -> str:
    """`message` with its marked parameters written as `reporter` writes them."""
    return spell(message, getattr(reporter, "spelling", PYTHON))


def _noop(n: int = 1, **fields: object) -> None:
    del n, fields


class Collecting(Reporter):
    """Keeps notes and warnings in lists (for tests and for callers that log them)."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


SILENT = Reporter()
