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
    with pytest.raises(LeukoError, match="--val and --test"):
        lk.split(tmp_path, out=tmp_path / "s", val=1.5)
    with pytest.raises(LeukoError, match="--epochs"):
        lk.train(tmp_path, "none", backbone="compact", epochs=0, out=tmp_path / "r")
    with pytest.raises(LeukoError, match="--map"):
        lk.train(tmp_path, "none", backbone="compact", mapping={"A": ""}, out=tmp_path / "r")
    with pytest.raises(LeukoError, match="--tta"):
        lk.predict(tmp_path, model=tmp_path, tta=0)
    with pytest.raises(LeukoError, match="not found"):
        lk.evaluate(tmp_path, model=tmp_path / "no-model")
    with pytest.raises(LeukoError, match="--format"):
        lk.export(tmp_path, format="zip")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
