"""The layout is true: imports point downward, only the CLI prints, the core is silent,
and no function or module grows past what a newcomer can hold (issue: code health)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import leukocli
from leukocli._util.progress import Collecting

PACKAGE = Path(leukocli.__file__).parent
# lower layers never import higher ones (see ARCHITECTURE.md)
LAYERS = {"_util": 0, "errors": 0, "_tf": 0, "_tf_quiet": 0, "__init__": 0, "data": 1,
          "curation": 2, "modeling": 3, "evaluation": 4, "counting": 4, "review": 4,
          "training": 5,
          "api": 6, "cli": 7, "__main__": 8}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> int:
    part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return LAYERS[part]


def _imported(path: Path) -> list[tuple[str, int]]:
    """(top-level leukocli part, line) of every leukocli import in a module."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - node.level + 1])
                target = [*base, *(node.module or "").split(".")] if node.module else base
                if not target:
                    target = [alias.name for alias in node.names][:1]
            elif (node.module or "").startswith("leukocli"):
                target = (node.module or "").split(".")[1:] or ["__init__"]
            else:
                continue
            out.append((target[0] if target else "__init__", node.lineno))
    return out


def test_imports_only_point_downward() -> None:
    wrong = []
    for path in _modules():
        own = _layer(path)
        for part, line in _imported(path):
            if LAYERS.get(part, 0) > own:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {part}")
    assert not wrong, wrong


def test_only_the_cli_prints_or_imports_rich_and_typer() -> None:
    wrong = []
    for path in _modules():
        if _layer(path) >= LAYERS["cli"]:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] in ("rich", "typer") for n in names):
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
                wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls print")
    assert not wrong, wrong


def test_functions_and_modules_stay_small() -> None:
    long = []
    for path in _modules():
        source = path.read_text()
        if len(source.splitlines()) > 400:
            long.append(f"{path.relative_to(PACKAGE)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} {size}")
    assert not long, long


def test_library_calls_are_silent(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """dedupe and split from Python print nothing; a Reporter receives their notes."""
    from leukocli.curation.dedupe import find_duplicates
    from leukocli.curation.split import run_split
    from leukocli.data.synth import make_dataset

    data = tmp_path / "data"
    make_dataset(data, per_class=4, size=(64, 64), seed=2, siblings=2, plant=True)
    capfd.readouterr()
    findings = find_duplicates(data)
    summary = run_split(data, tmp_path / "splits", val=0.25, group_by="auto")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert findings.groups and summary["splits"]["val"]["images"] > 0
    notes = Collecting()
    run_split(data, tmp_path / "splits2", val=0.25, group_by="none", reporter=notes)
    assert any("wrote train.csv" in m for m in notes.infos)
    assert capfd.readouterr() == ("", "")


def test_choice_help_is_written_from_the_registries_the_checks_use() -> None:
    """A backbone, precision, strategy, recipe, keep or class-weights choice added to its
    registry shows in --help by itself: help, validation and registry cannot drift."""
    import typing

    from leukocli.cli.options import TRAIN_OPTIONS
    from leukocli.modeling.backbones import BACKBONES
    from leukocli.training.options import CLASS_WEIGHTS, KEEP, PRECISIONS, RECIPES, STRATEGIES

    registries = {"backbone": BACKBONES, "precision": PRECISIONS, "strategy": STRATEGIES,
                  "recipe": RECIPES, "keep": KEEP, "class_weights": CLASS_WEIGHTS}
    for name, registry in registries.items():
        annotation = TRAIN_OPTIONS[name][0]
        option = next(m for m in typing.get_args(annotation)[1:] if hasattr(m, "help"))
        for choice in registry:
            assert choice in option.help, (name, choice, option.help)


# where a `--flag` or a `leuko ...` command would sit in a core error message
CLI_WORDS = re.compile(r"--[a-z{]|`leuko [a-z]|\(leuko [a-z]")
# rooms whose messages may still name flags while a rewording is under way (none now)
NOT_YET_REWORDED: tuple[str, ...] = ()


def _error_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal inside a `raise`, an `...Error(...)` made to be
    raised later, a reporter's `.info(...)`/`.warn(...)`, or a module constant (where
    shared message parts live): the messages a caller reads."""
    tree = ast.parse(path.read_text())
    out = []
    constants = [n for n in tree.body if isinstance(n, ast.Assign)]
    for node in [*ast.walk(tree), *constants]:
        made = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id.endswith(("Error", "Interrupted")))
        # a reporter's notes and warnings, which a library caller reads as well
        made = made or (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("info", "warn"))
        if made or node in constants or (isinstance(node, ast.Raise) and node.exc):
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    out.append((part.lineno, part.value))
    return out


def test_core_errors_name_parameters_not_flags_or_commands() -> None:
    """The core speaks to a Python caller: `batch`, `lk.split(...)`; only cli/ says `--batch`
    or `leuko split`, by spelling the marks (errors.opt, errors.cmd) a LeukoError carries."""
    wrong = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("cli/", *NOT_YET_REWORDED)):
            continue
        wrong += [f"{rel}:{line} {text!r}" for line, text in sorted(set(_error_texts(path)))
                  if CLI_WORDS.search(text)]
    assert not wrong, "\n".join(wrong)
