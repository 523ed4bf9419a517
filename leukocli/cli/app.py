"""The Typer app and the one place errors become messages and exit codes.

Every command is registered through `command`, which turns a LeukoError into one line
on stderr and its exit code, and Ctrl-C into a line saying what state was left and
exit 130. Because the mapping lives in the app (not in `main`), Typer's CliRunner
sees the same exit codes a shell does, so CLI tests run in-process.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of Click; older ones use Click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, LeukoError
from .console import error_line, errors_said, forget_errors

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED_QUIETLY = ("interrupted; nothing was half-written (leuko replaces each file whole "
                       "or not at all)")


class LeukoGroup(TyperGroup):
    """Click's own errors in leuko's form: one `error:` line, the last one printed.

    Typer draws a usage error as a box of several lines after two lines of usage; a
    script (and the README) wants `error: <what>` alone on stderr with exit code 2. An
    interrupt while Click parses, or anywhere outside a command's own handler, is said
    in one line too (Click would exit 130 in silence).
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        forget_errors()
        argv = list(sys.argv[1:] if args is None else args)
        if "" in argv:  # Path("") is the current folder: `leuko dedupe ""` scanned it
            after = argv[argv.index("") - 1] if argv.index("") else "leuko"
            error_line(f"an empty argument ('' after {after}) names no file, folder or value")
            sys.exit(EXIT_USAGE)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except click_errors.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            code = EXIT_USAGE
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "leuko"
            error_line(f"{exc.format_message().rstrip('.')} (see `{where} --help`)")
            code = EXIT_USAGE
        except click_errors.ClickException as exc:
            error_line(exc.format_message())
            code = exc.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
        code = code if isinstance(code, int) else 0
        if code == EXIT_INTERRUPTED and not errors_said():
            error_line(INTERRUPTED_QUIETLY)
        sys.exit(code)


app = typer.Typer(
    cls=LeukoGroup,
    name="leuko",
    help=(
        "Turn folders of white-blood-cell micrographs into a trained classifier and honest "
        "reports.\n\nTypical run: leuko dedupe ./dataset; leuko split ./dataset; "
        "leuko train; leuko evaluate; leuko predict cell.jpg"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# The Python parameters whose flag is not `--` + the name with _ as -.
FLAGS = {"img_size": "--img", "train_csv": "--train", "val_csv": "--val", "mapping": "--map",
         "class_name": "--class", "evaluate": "--eval"}
# The `lk.` functions whose command has another name.
COMMANDS = {"cross_validate": "cv"}


class CliSpelling:
    """A core message's parameters and steps as the command line writes them: the flag
    (with its value) and the `leuko` command, so users read what they type."""

    command_line = True

    def option(self, name: str, value: str | float | None) -> str:
        if name.isupper():  # an argument's placeholder (FOLDER), not a flag
            return name
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        if value is False:  # a switch's off side: --no-plant
            return "--no-" + flag.removeprefix("--")
        return flag if value is None or value is True else f"{flag} {value}"

    def command(self, name: str, args: list[str], options: dict[str, str | float]) -> str:
        words = ["leuko", COMMANDS.get(name, name), *args]
        words += [self.option(k, v) for k, v in options.items()]
        return " ".join(words)


CLI = CliSpelling()


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose LeukoErrors and interrupts end as one line and an exit code."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            try:
                with warnings.catch_warnings():
                    # reported once per run by the scan instead (data.dataset.check_images)
                    warnings.filterwarnings("ignore", message=".*decompression bomb.*")
                    return fn(*args, **kw)
            except Interrupted as exc:
                error_line(f"interrupted: {exc.spelled(CLI)}")
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except LeukoError as exc:
                error_line(exc.spelled(CLI))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                error_line(INTERRUPTED_QUIETLY)
                raise typer.Exit(EXIT_INTERRUPTED) from None

        kwargs.setdefault("help", _help_text(fn))
        app.command(name, **kwargs)(run)
        return fn

    return register


def _help_text(fn: Callable[..., Any]) -> str:
    """The docstring with its paragraphs reflowed and markup escaped: Rich keeps the source's
    line breaks and reads `[onnx]` as a style tag."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    paragraphs = (" ".join(p.split()) for p in doc.split("\n\n"))
    return "\n\n".join(escape(p) for p in paragraphs if p)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leuko {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """leuko command line."""
