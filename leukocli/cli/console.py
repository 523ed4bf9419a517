"""The one Rich console pair, the Rich Reporter the core reports through, and tables.

Tables and results go to stdout; progress bars, notes, warnings and errors go to
stderr, so `leuko predict --format csv > out.csv` stays clean. Only the cli package
imports this module: the core reports through leukocli._util.progress.Reporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

from .._util.progress import Advance, Reporter

console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def quiet() -> bool:
    """LEUKO_QUIET=1 silences notes and bars (warnings and errors still show)."""
    return bool(os.environ.get("LEUKO_QUIET"))


def warn(message: str) -> None:
    err_console.print("[yellow]warning:[/yellow] ", end="")
    err_console.print(message, markup=False, soft_wrap=True)


def info(message: str) -> None:
    if not quiet():
        err_console.print(message, markup=False, soft_wrap=True)


_said: list[str] = []  # the error lines printed by this process


def error_line(message: str) -> None:
    """One error line on stderr, the message printed as written (no markup, no emoji)."""
    _said.append(message)
    err_console.print("[red]error:[/red] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def errors_said() -> bool:
    """True once this command has printed an error line (the exit path adds no second)."""
    return bool(_said)


def forget_errors() -> None:
    """A new command starts (tests run many in one process)."""
    _said.clear()


def make_progress(*extra_columns: Any, transient: bool = False) -> Progress:
    """A progress display on stderr; disabled when quiet or when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        *extra_columns,
    ]
    return Progress(*columns, console=err_console, transient=transient,
                    disable=quiet() or not _progress_allowed())


def _progress_allowed() -> bool:
    # A live bar on a non-terminal stderr only adds noise to logs.
    return err_console.is_terminal or bool(os.environ.get("LEUKO_FORCE_PROGRESS"))


class RichReporter(Reporter):
    """Notes and warnings on stderr, one bar per task; tasks may nest (cv's fold bar).

    Nested tasks share one live display, so an outer bar over folds stays on screen
    while each fold's own bars come and go beneath it.
    """

    def __init__(self) -> None:
        from .app import CLI  # notes name flags, as the command line's errors do

        self.spelling = CLI
        self._progress: Progress | None = None
        self._depth = 0

    def info(self, message: str) -> None:
        if self._progress is not None and self._progress.live.is_started and not quiet():
            self._progress.console.print(message, markup=False, soft_wrap=True)
        else:
            info(message)

    def warn(self, message: str) -> None:
        warn(message)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        outer = self._progress is None
        if outer:
            self._progress = make_progress()
            self._progress.start()
        progress = self._progress
        assert progress is not None
        task_id = progress.add_task(description, total=total, note="")
        self._depth += 1

        def advance(n: int = 1, **fields: Any) -> None:
            progress.update(task_id, advance=n, **fields)

        try:
            yield advance
        finally:
            self._depth -= 1
            if outer:
                progress.stop()
                self._progress = None
            else:
                progress.remove_task(task_id)


def simple_table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(x) for x in row])
    return table
