"""The Python API (issue 25): `import leukocli as lk` is light, and README's example runs
dedupe -> split -> train -> evaluate -> predict -> export from Python, printing nothing."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import leukocli as lk
from leukocli.curation.dedupe import Findings
from leukocli.errors import LeukoError

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
# TensorFlow's native log lines (absl: "E0000 00:00:1796.9  15174 cuda_platform.cc:52] ..."):
# a library leaves TensorFlow's logging to its caller, so they are not leuko's output.
TF_NATIVE_LOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")


def _readme_examples() -> list[str]:
    """The python code blocks of README's "Python API" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _can_export_onnx() -> bool:
    return all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx", "onnx"))


def _leuko_output(capfd: pytest.CaptureFixture[str]) -> tuple[str, str]:
    out, err = capfd.readouterr()
    err = "\n".join(line for line in err.splitlines() if not TF_NATIVE_LOG.match(line))
    return out, err


def test_import_loads_no_tensorflow() -> None:
    code = ("import sys, leukocli; a = 'tensorflow' in sys.modules; import leukocli as lk; "
            "lk.train, lk.predict, lk.export; print(a, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
    assert set(lk.__all__) >= {"__version__", "dedupe", "split", "train", "evaluate",
                               "predict", "load_model", "export"}
    with pytest.raises(AttributeError):
        lk.no_such_function  # noqa: B018


def test_readme_example_runs_silently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    examples = _readme_examples()
    assert len(examples) == 2, "README's Python API section holds two python blocks"
    import leukocli._tf  # noqa: F401  TensorFlow's import chatter is not leuko's output

    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    ns: dict[str, Any] = {"__name__": "readme"}
    exec(compile(examples[0], "README.md", "exec"), ns)  # noqa: S102
    assert _leuko_output(capfd) == ("", "")
    _check_pipeline(ns, tmp_path)
    if not _can_export_onnx():
        pytest.skip("onnxruntime, tf2onnx or onnx missing: the export step is not run")
    exec(compile(examples[1], "README.md", "exec"), ns)  # noqa: S102
    assert _leuko_output(capfd) == ("", "")
    _check_export(ns, tmp_path)


def _check_pipeline(ns: dict[str, Any], root: Path) -> None:
    findings = ns["findings"]
    assert isinstance(findings, Findings) and findings.groups  # make_dataset plants copies
    # the in-memory Findings are kept beside the split, which names them and used them
    assert json.loads((root / "splits" / "dedupe.json").read_text())["groups"]
    params = json.loads((root / "splits" / "split.json").read_text())["params"]
    assert params["exclude"] == str(Path("splits", "dedupe.json")) and params["excluded"] > 0
    run = ns["run"]
    assert run.run_dir == Path("runs/first") and run.epochs_done == 1 and not run.interrupted
    assert (root / "runs" / "first" / "model.keras").is_file()
    ev = ns["ev"]
    assert ev.classes == CLASSES and ev.probs.shape == (ev.metrics["n"], 4)
    assert 0.0 <= ns["accuracy"] <= 1.0
    assert {"metrics.json", "predictions.csv", "confusion.png"} <= {
        p.name for p in (root / "runs" / "first" / "val").iterdir()}
    cells = ns["cells"]
    assert isinstance(cells, pd.DataFrame)
    assert list(cells.columns) == ["path", "predicted", "confidence",
                                   *[f"prob_{c}" for c in CLASSES], "error"]
    n_files = len(list((root / "smears" / "LYMPHOCYTE").iterdir()))
    assert len(cells) == n_files  # one row per file, unreadable ones included
    good = cells[cells["error"].isna()]
    assert len(good) >= 1 and set(good["predicted"]) <= set(CLASSES)
    probs = good[[f"prob_{c}" for c in CLASSES]].to_numpy(float)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(good["confidence"], probs.max(axis=1))


def _check_export(ns: dict[str, Any], root: Path) -> None:
    card, cells, onnx_cells = ns["card"], ns["cells"], ns["onnx_cells"]
    assert card["format"] == "onnx" and card["classes"] == CLASSES
    artefact = Path(card["path"]).resolve()
    assert artefact == (root / "runs" / "first" / "export" / "model.onnx").resolve()
    assert artefact.is_file() and artefact.with_name("model.onnx.leuko.json").is_file()
    assert list(onnx_cells.columns) == list(cells.columns) and len(onnx_cells) == len(cells)
    cols = [f"prob_{c}" for c in CLASSES]
    ok = cells["error"].isna()
    assert np.allclose(onnx_cells[ok][cols].to_numpy(float), cells[ok][cols].to_numpy(float),
                       atol=0.02)


def test_errors_are_leuko_errors_and_options_are_checked_first(tmp_path: Path) -> None:
    with pytest.raises(LeukoError, match="no such file"):
        lk.dedupe(tmp_path / "missing")
    with pytest.raises(lk.ParameterError, match="^val and test must be") as bad_val:
        lk.split(tmp_path, out=tmp_path / "s", val=1.5)
    assert bad_val.value.parameter == "val" and isinstance(bad_val.value, ValueError)
    with pytest.raises(LeukoError, match="epochs must be at least 1"):
        lk.train(tmp_path, "none", backbone="compact", epochs=0, out=tmp_path / "r")
    with pytest.raises(LeukoError, match="mapping expects OLD=NEW"):
        lk.train(tmp_path, "none", backbone="compact", mapping={"A": ""}, out=tmp_path / "r")
    with pytest.raises(LeukoError, match="tta must be between"):
        lk.predict(tmp_path, model=tmp_path, tta=0)
    with pytest.raises(LeukoError, match="not found"):
        lk.evaluate(tmp_path, model=tmp_path / "no-model")
    with pytest.raises(LeukoError, match="format must be one of"):
        lk.export(tmp_path, format="zip")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


# ----------------------------------------------------------------- count and audit (issue 25)
def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_count_returns_what_leuko_count_writes(tiny_run: tuple[Path, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    """The same core: lk.count's cells and figures are leuko count's files, byte for byte,
    and it writes nothing unless given out=."""
    from conftest import invoke

    from leukocli.counting.count import cells_csv, counts_csv
    from leukocli.data.synth import make_fields

    _, run = tiny_run
    made = make_fields(tmp_path / "fields", n=4, seed=2)
    photos = tmp_path / "fields" / "JPEGImages"
    done = invoke("count", str(photos), "--model", str(run), "--eval", "--format", "json",
                  "--out", str(tmp_path / "cli"))
    assert done.code == 0, done.stderr
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    capfd.readouterr()
    result = lk.count(photos, model=run, evaluate=True)
    assert _leuko_output(capfd) == ("", "")
    assert list(work.iterdir()) == [] and result.written == []  # nothing written without out
    assert result.to_dict() == json.loads(done.stdout)
    assert result.to_dict() == json.loads((tmp_path / "cli" / "counts.json").read_text())
    assert cells_csv(result.cells) == (tmp_path / "cli" / "cells.csv").read_text()
    assert counts_csv(result.summary) == (tmp_path / "cli" / "counts.csv").read_text()
    assert result.unreadable == [] and result.classes == CLASSES
    assert len(result.cells) == sum(len(m["cells"]) for m in made) > 0
    assert result.evaluation is not None and result.evaluation["photos_evaluated"] == 4
    # a Bundle loaded once (as the command loads it: the twin), and out=: the very files
    # leuko count wrote
    again = lk.count([str(photos)], model=lk.load_model(run, runtime="auto"), evaluate=True,
                     out=tmp_path / "lib")
    assert _leuko_output(capfd) == ("", "")
    assert _file_bytes(tmp_path / "lib") == _file_bytes(tmp_path / "cli")
    assert sorted(again.written) == sorted(p for p in (tmp_path / "lib").rglob("*")
                                           if p.is_file())


def test_count_without_a_model_returns_the_unreadable_photos(tmp_path: Path) -> None:
    """model=None is --model none (located only); an unreadable photo is part of the
    result, where the command exits 1; bad input is a LeukoError before any work."""
    from conftest import invoke

    from leukocli.data.synth import make_fields

    make_fields(tmp_path / "fields", n=3, seed=4)
    photos = tmp_path / "fields" / "JPEGImages"
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    done = invoke("count", str(photos), "--model", "none", "--out", str(tmp_path / "cli"))
    assert done.code == 1, done.stderr
    result = lk.count(photos, model=None, out=tmp_path / "lib")
    assert [Path(p).name for p, _ in result.unreadable] == ["broken.jpg"]
    assert result.classes == ["WBC"] and result.evaluation is None
    assert str(photos / "broken.jpg") not in result.summary["photos"]
    assert _file_bytes(tmp_path / "lib") == _file_bytes(tmp_path / "cli")
    with pytest.raises(LeukoError, match="cell_size must be between"):
        lk.count(photos, model=None, cell_size=5.0, out=tmp_path / "x")
    with pytest.raises(LeukoError, match="not found"):
        lk.count(photos, model=tmp_path / "no-model", out=tmp_path / "x")
    with pytest.raises(LeukoError, match="no images found"):
        lk.count(tmp_path / "nothing-here", model=None, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _fake_cv_run(data: Path, root: Path) -> tuple[Path, list[str]]:
    """A collected cv run of DATA as audit reads it (oof.csv), with two groups' images
    strongly called another class: planted label errors."""
    from leukocli.data.dataset import scan

    rng = np.random.default_rng(0)
    records = scan(data).records
    classes = sorted({r.label for r in records})
    rows, flipped = [], []
    for i, r in enumerate(records):
        group = f"{r.label}-{i // 2}"
        probs = rng.dirichlet(np.ones(len(classes)))
        truth = classes.index(r.label)
        if i in (2, 3, 10, 11):  # two whole groups, both images
            truth = (truth + 1) % len(classes)
            flipped.append(group)
        probs = 0.3 * probs + 0.7 * np.eye(len(classes))[truth]
        rows.append({"path": str(r.path), "label": r.label, "group": group, "fold": i % 2,
                     "predicted": classes[int(probs.argmax())],
                     **{f"prob_{c}": float(p) for c, p in zip(classes, probs, strict=True)}})
    run = root / "cv"
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(run / "oof.csv", index=False)
    return run, sorted(set(flipped))


def test_audit_returns_what_leuko_audit_writes(tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    from conftest import invoke

    from leukocli.data.synth import make_dataset

    data = tmp_path / "data"
    make_dataset(data, per_class=4, size=(64, 64), seed=3, siblings=1, plant=False)
    run, flipped = _fake_cv_run(data, tmp_path)
    cli = tmp_path / "cli"
    done = invoke("audit", str(data), "--model", str(run), "--out", str(cli), "--top", "3",
                  "--write-exclude", str(cli / "issues.json"))
    assert done.code == 0, done.stderr
    capfd.readouterr()
    quiet = lk.audit(data, model=run, top=3)
    assert _leuko_output(capfd) == ("", "")
    assert quiet.written == [] and quiet.exclude is None and quiet.cv_run == run.resolve()
    assert set(flipped) <= set(quiet.result.groups.group.head(3))
    groups = pd.read_csv(cli / "audit_groups.csv", dtype={"group": str})
    pd.testing.assert_frame_equal(quiet.result.groups, groups)
    lib = tmp_path / "lib"
    done_lib = lk.audit(str(data), model=str(run), out=lib, top=3,
                        write_exclude=lib / "issues.json")
    assert _file_bytes(lib) == _file_bytes(cli)
    assert done_lib.exclude == json.loads((cli / "issues.json").read_text())
    assert sorted(done_lib.written) == sorted(lib.iterdir())
    with pytest.raises(LeukoError, match="epochs, folds only apply when audit runs"):
        lk.audit(data, model=run, folds=3, epochs=2)
    with pytest.raises(LeukoError, match="top must be at least 1"):
        lk.audit(data, model=run, top=0)
