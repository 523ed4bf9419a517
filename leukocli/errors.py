"""The exceptions the CLI turns into one-line messages and meaningful exit codes.

A message speaks the caller's language. The core never writes `--batch` or `leuko split`:
it marks a parameter with `opt("batch")` and a step with `cmd("split", "DATASET")`
inside the message, so a notebook reads "batch must be at least 1" and "run
`lk.split(DATASET)` first", and the CLI, the one place errors become messages
(cli/app.py), spells the same marks as its flags and commands.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

# Exit codes, so scripts can tell outcomes apart.
EXIT_OK = 0
EXIT_PARTIAL = 1  # the command ran, but some inputs failed (e.g. an unreadable image)
EXIT_USAGE = 2  # bad input: missing path, wrong layout, bad option value, busy output
EXIT_INTERRUPTED = 130  # Ctrl-C


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line (or its type's name), short enough for a one-line error:
    libraries such as h5py, onnxruntime and Keras raise multi-line messages, and
    TensorFlow's lead with the graph node that failed ("{{function_node ...}} "), which
    tells a user nothing and is dropped."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if line.startswith("{{"):
        line = line.split("}} ", 1)[-1]
    return line[:limit]


_MARK = "\x00"  # brackets a mark; JSON escapes it, so a value can never close a mark early
_MARKED = re.compile(f"{_MARK}(.*?){_MARK}", re.DOTALL)
_UNSET: Any = object()


def opt(name: str, value: Any = _UNSET) -> str:
    """Mark the Python parameter `name` (with the value it was given, when the message
    shows one) in a message: `batch` / `keep='best'` for Python, `--keep best` for the CLI."""
    shown = None if value is _UNSET else (
        value if isinstance(value, bool | int | float) else str(value))
    return _MARK + json.dumps(["opt", name, shown]) + _MARK


def cli_only(text: str) -> str:
    """Mark a part of a message that only the command line has (e.g. "or try
    `leuko demo`", which no library call matches); Python callers read nothing there."""
    return _MARK + json.dumps(["cli", text]) + _MARK


def cmd(name: str, *args: Any, **options: Any) -> str:
    """Mark a step a caller can take, by its `lk.` function's name and arguments:
    `lk.train(out='runs/a')` for Python, `leuko train --out runs/a` for the CLI."""
    shown = {k: v if isinstance(v, bool | int | float) else str(v) for k, v in options.items()}
    return _MARK + json.dumps(["cmd", name, [str(a) for a in args], shown]) + _MARK


class Spelling(Protocol):
    """How one kind of caller writes a parameter and a step (see `PYTHON`, cli/app.py);
    `command_line` says whether it shows the `cli_only` parts."""

    command_line: bool

    def option(self, name: str, value: str | float | None) -> str: ...

    def command(self, name: str, args: list[str], options: dict[str, str | float]) -> str: ...


def _py_value(value: str | float) -> str:
    """A placeholder such as DATASET stays bare; a real value reads as a Python literal."""
    return value if isinstance(value, str) and re.fullmatch(r"[A-Z_.]+", value) else repr(value)


class PythonSpelling:
    """Parameters and steps as a library caller writes them."""

    command_line = False

    def option(self, name: str, value: str | float | None) -> str:
        if name.isupper():  # an argument's placeholder (FOLDER), not a keyword
            return name
        return name if value is None else f"{name}={_py_value(value)}"

    def command(self, name: str, args: list[str], options: dict[str, str | float]) -> str:
        parts = [_py_value(a) for a in args] + [self.option(k, v) for k, v in options.items()]
        return f"lk.{name}({', '.join(parts)})"


PYTHON = PythonSpelling()


def spell(text: str, spelling: Spelling) -> str:
    """`text` with every mark written in `spelling`."""

    def one(match: re.Match[str]) -> str:
        kind, name, *rest = json.loads(match.group(1))
        if kind == "cli":
            return spell(name, spelling) if spelling.command_line else ""
        return spelling.option(name, rest[0]) if kind == "opt" else spelling.command(name, *rest)

    return _MARKED.sub(one, text)


class LeukoError(Exception):
    """A problem the user can fix; its message is printed as one line, without a traceback.

    `str()` is the message in Python's words; `template` keeps the marks (`opt`, `cmd`)
    for `spelled`, and for a wrapping message (f"... {exc.template}") to keep them too.
    """

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(spell(message, PYTHON))
        self.template = message
        self.exit_code = exit_code

    def spelled(self, spelling: Spelling) -> str:
        """The message with its parameters and steps written as `spelling` writes them."""
        return spell(self.template, spelling)


class ParameterError(LeukoError, ValueError):
    """A bad value of the parameter `parameter` (its Python name: "batch", "img_size"):
    a ValueError to Python code, one line naming the flag on the command line."""

    def __init__(self, parameter: str, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message, exit_code)
        self.parameter = parameter


class Interrupted(LeukoError):
    """Ctrl-C, caught where the state it leaves can be described (and undone or resumed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_INTERRUPTED)


def check_batch(batch: int) -> None:
    """The one check of a batch size, for training and inference alike (here, so that
    checking training options on the help path imports nothing heavier)."""
    if batch < 1:
        raise ParameterError("batch", f"{opt('batch')} must be at least 1 (got {batch})")
