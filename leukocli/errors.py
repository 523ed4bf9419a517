"""The exceptions the CLI turns into one-line messages and meaningful exit codes."""

from __future__ import annotations

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


class LeukoError(Exception):
    """A problem the user can fix; its message is printed as one line, without a traceback."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(LeukoError):
    """Ctrl-C, caught where the state it leaves can be described (and undone or resumed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_INTERRUPTED)


def check_batch(batch: int) -> None:
    """The one check of --batch, for training and inference alike (here, so that checking
    training options on the help path imports nothing heavier)."""
    if batch < 1:
        raise LeukoError(f"--batch must be at least 1 (got {batch})")
