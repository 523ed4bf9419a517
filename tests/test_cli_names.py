"""One name per meaning across commands: which model is `--model` everywhere (export and
report keep their RUN argument too, so existing scripts go on working)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import invoke


@pytest.mark.parametrize("command", ["export", "report"])
def test_model_is_spelled_model_everywhere(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-run"
    by_argument = invoke(command, str(missing)).one_line_error(2)
    by_option = invoke(command, "--model", str(missing)).one_line_error(2)
    assert by_argument == by_option and str(missing) in by_option
    invoke(command, str(missing), "--model", str(tmp_path / "other")).one_line_error(
        2, "give the model once")
