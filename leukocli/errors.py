"""The one exception the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

# Exit codes, so scripts can tell outcomes apart.
EXIT_OK = 0
EXIT_PARTIAL = 1  # the command ran, but some inputs failed (e.g. an unreadable image)
EXIT_USAGE = 2  # bad input: missing path, wrong layout, bad option value
EXIT_INTERRUPTED = 130  # Ctrl-C


class LeukoError(Exception):
    """A problem the user can fix; its message is printed as one line, without a traceback."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
