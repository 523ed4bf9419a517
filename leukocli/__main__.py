"""The `leuko` command (and `python -m leukocli`), started so that Ctrl-C at any moment,
even while Python imports the command line, ends in one line and exit code 130."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Console-script entry point: import the command line, run it, end quietly."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted while starting; nothing was done\n")
        _end(130)  # not SystemExit: a Ctrl-C pending in an import's threads would kill us
    try:
        run()
    except KeyboardInterrupt:  # between Typer's own steps, outside any command's handler
        from .cli.app import INTERRUPTED_QUIETLY
        from .cli.console import error_line, errors_said

        if not errors_said():
            error_line(INTERRUPTED_QUIETLY)
        _end(130)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            _quiet_teardown()
        if exc.code == 130:
            _end(130)
        raise


def _end(code: int) -> None:
    """Exit now: said and unwound, a Ctrl-C still pending in a library's threads or
    finalisers must not turn the exit into a death by SIGINT (seen: status -2, not 130)."""
    _quiet_teardown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _quiet_teardown() -> None:
    """After leuko's last (error) line, TensorFlow's C++ runtime says nothing more: its
    threads log as they are torn down (a cancelled rendezvous, a closed queue). The
    process is ending, so its stderr goes quiet; only the real process does this."""
    if "tensorflow" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


if __name__ == "__main__":
    main()
