"""Errors in the caller's language: a notebook reads the Python parameter, the command
line reads its flag, from the one error the core raises (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import leukocli as lk
from leukocli.cli import app
from leukocli.cli.app import CLI
from leukocli.errors import LeukoError, ParameterError, cmd, opt


@pytest.mark.parametrize(("call", "parameter", "said"), [
    (lambda d: lk.train(d, "none", batch=0, out=d / "r"), "batch",
     "batch must be at least 1 (got 0)"),
    (lambda d: lk.train(d, "none", backbone="compact", img_size=(8, 8), out=d / "r"),
     "img_size", "img_size='8x8' is too small for compact"),
    (lambda d: lk.train(d, "none", backbone="compact", keep="best", out=d / "r"), "keep",
     "keep='best' chooses an epoch by validation loss; with val='none' the last epoch"),
    (lambda d: lk.predict(d, model=d, tta=0), "tta", "tta must be between 1 (off)"),
    (lambda d: lk.export(d, format="zip"), "format", "format must be one of"),
    (lambda d: lk.count(d, model=None, cell_size=5.0, out=d / "x"), "cell_size",
     "cell_size must be between 0.02 and 1 (got 5.0)"),
])
def test_a_bad_value_is_a_value_error_naming_the_parameter(
        call: object, parameter: str, said: str, tmp_path: Path) -> None:
    """Fails before any TensorFlow work: every one is an option check."""
    with pytest.raises(ParameterError) as info:
        call(tmp_path)  # type: ignore[operator]
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, LeukoError)
    assert err.parameter == parameter
    assert str(err).startswith(said), str(err)
    assert "--" not in str(err) and "\x00" not in str(err)


def test_the_cli_spells_the_same_error_as_its_flags_and_commands() -> None:
    err = LeukoError(f"{opt('img_size', '8x8')} with {opt('batch', 4)}; run "
                     f"`{cmd('split', 'DATASET')}`, then `{cmd('train', resume=True, out='r')}`, "
                     f"`{cmd('cross_validate', fold='N')}` or use {opt('plant', False)}")
    assert str(err) == ("img_size='8x8' with batch=4; run `lk.split(DATASET)`, then "
                        "`lk.train(resume=True, out='r')`, `lk.cross_validate(fold=N)` or use "
                        "plant=False")
    assert err.spelled(CLI) == ("--img 8x8 with --batch 4; run `leuko split DATASET`, then "
                                "`leuko train --resume --out r`, `leuko cv --fold N` or use "
                                "--no-plant")


def test_a_wrapped_message_keeps_its_marks() -> None:
    inner = ParameterError("train", f"pass {opt('train', 'PATH')}")
    outer = LeukoError(f"train split: {inner.template}")
    assert str(outer) == "train split: pass train=PATH"
    assert outer.spelled(CLI) == "train split: pass --train PATH"


def test_the_command_line_still_says_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--train", str(tmp_path), "--val", "none",
                                      "--batch", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--batch must be at least 1 (got 0)" in result.output


def test_notes_name_the_parameter_for_python_and_the_flag_for_the_command_line() -> None:
    """A reporter's warnings read as the caller writes: `keep='best'` from Python,
    `--keep best` on the command line (the CLI's reporter spells the same marks)."""
    from leukocli._util.progress import Collecting
    from leukocli.cli.console import RichReporter
    from leukocli.training.cv import plan_options
    from leukocli.training.options import TrainOptions

    mine = Collecting()
    plan_options(TrainOptions(backbone="compact", keep="best"), mine)
    assert mine.warnings and mine.warnings[0].startswith("keep='best' lets each held-out")
    seen: list[str] = []

    class Cli(RichReporter):
        def warn(self, message: str) -> None:
            seen.append(message)

    plan_options(TrainOptions(backbone="compact", keep="best"), Cli())
    assert seen and seen[0].startswith("--keep best lets each held-out")
