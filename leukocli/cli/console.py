"""The one Rich console pair and progress helpers.

Tables and results go to stdout; progress bars, warnings and errors go to stderr,
so `leuko predict --format csv > out.csv` stays clean.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)

_quiet = bool(os.environ.get("LEUKO_QUIET"))


def set_quiet(quiet: bool) -> None:
    """Silence progress bars (e.g. for --format json, or scripts)."""
    global _quiet
    _quiet = quiet


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def info(message: str) -> None:
    if not _quiet:
        err_console.print(message, soft_wrap=True)


def error_line(message: str) -> None:
    """Print one error line to stderr without markup interpretation of the message."""
    err_console.print("[red]error:[/red] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def make_progress(*extra_columns: object, transient: bool = False) -> Progress:
    """A progress display on stderr; disabled when quiet."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
    ]
    return Progress(
        *columns,  # type: ignore[arg-type]
        console=err_console,
        transient=transient,
        disable=_quiet or not _progress_allowed(),
    )


def _progress_allowed() -> bool:
    # A live bar on a non-terminal stderr only adds noise to logs.
    return err_console.is_terminal or bool(os.environ.get("LEUKO_FORCE_PROGRESS"))


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)  # type: ignore[arg-type]

    def update(self, **kwargs: object) -> None:
        self._progress.update(self._task, **kwargs)  # type: ignore[arg-type]


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[_Bar]:
    """One bar for one loop: `with progress_bar("hashing", n) as bar: ... bar.advance()`."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        yield _Bar(progress, task)


def simple_table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(x) for x in row])
    return table
