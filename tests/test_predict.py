"""`leuko predict` and the saved-run bundle: scriptable output that agrees with evaluate,
partial failures that do not stop the rest, and one-line errors for missing models."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import error_lines, make_tiny_run, run_leuko

from leukocli.errors import LeukoError

SIZE = (75, 75)


def _leuko(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_leuko(*args, cwd=cwd, quiet=False)


_error_lines = error_lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic class-folder dataset and a 2-epoch tiny CNN saved as runs/tiny."""
    return make_tiny_run(tmp_path_factory.mktemp("predictrun"), per_class=3, seed=2, size=SIZE)


def _evaluate_predictions(data: Path, run: Path, out: Path) -> dict[str, dict[str, str]]:
    from leukocli.evaluate import run_evaluate_cli

    run_evaluate_cli(data=data, model=run, out=out)
    with (out / "predictions.csv").open() as fh:
        return {str(Path(r["path"]).resolve()): r for r in csv.DictReader(fh)}


def test_json_and_csv_agree_with_evaluate(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leukocli.predict import run_predict_cli

    data, run = trained
    truth = _evaluate_predictions(data, run, tmp_path / "eval")
    classes = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    capsys.readouterr()

    run_predict_cli(paths=[str(data)], model=run, top_k=3, fmt="json", batch=5)
    items: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    assert len(items) == len(truth) == 24
    for item in items:
        ref = truth[str(Path(item["path"]).resolve())]
        assert item["predicted"] == ref["predicted"]
        assert item["probability"] == pytest.approx(float(ref["confidence"]), abs=1e-5)
        for c in classes:
            assert item["probabilities"][c] == pytest.approx(float(ref[f"prob_{c}"]), abs=1e-5)
        assert [t["label"] for t in item["top_k"]][0] == item["predicted"]
        probs = [t["probability"] for t in item["top_k"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)

    # A glob and a file, CSV: clean stdout that any CSV reader takes.
    glob = str(data / "MONOCYTE" / "*.jpeg")
    one = next((data / "EOSINOPHIL").glob("*.jpeg"))
    run_predict_cli(paths=[glob, str(one)], model=run, top_k=2, fmt="csv", batch=64)
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert list(rows[0]) == [
        "path", "predicted", "probability", "top2", "top2_probability",
        *[f"prob_{c}" for c in classes],
    ]
    assert len(rows) == 6 + 1
    for r in rows:
        ref = truth[str(Path(r["path"]).resolve())]
        assert r["predicted"] == ref["predicted"]
        assert float(r["probability"]) == pytest.approx(float(ref["confidence"]), abs=1e-5)
        assert r["top2"] != r["predicted"]
        assert float(r["top2_probability"]) <= float(r["probability"])


def test_table_output_and_bad_options(
    trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukocli.predict import run_predict_cli

    data, run = trained
    monkeypatch.chdir(data)
    image = next(Path("LYMPHOCYTE").glob("*.jpeg"))
    run_predict_cli(paths=[str(image)], model=run, top_k=2, fmt="table")
    out = capsys.readouterr().out
    assert image.name in out and "2nd" in out
    assert any(c in out for c in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"))
    with pytest.raises(LeukoError, match="--format"):
        run_predict_cli(paths=[str(image)], model=run, fmt="xml")
    with pytest.raises(LeukoError, match="--top-k"):
        run_predict_cli(paths=[str(image)], model=run, top_k=0)


def test_corrupt_image_among_good_ones(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    folder = tmp_path / "batch"
    shutil.copytree(data / "NEUTROPHIL", folder)
    good = sorted(p.name for p in folder.glob("*.jpeg"))
    (folder / "truncated.jpg").write_bytes(next(folder.glob("*.jpeg")).read_bytes()[:300])
    (folder / "notes.png").write_text("not an image")

    res = _leuko("predict", str(folder), "--model", str(run), "--format", "json")
    assert res.returncode == 1, res.stderr  # EXIT_PARTIAL: something failed, rest classified
    items = json.loads(res.stdout)  # stdout stays clean JSON despite the failures
    ok = [i for i in items if "predicted" in i]
    failed = {Path(i["path"]).name: i["error"] for i in items if "error" in i}
    assert sorted(Path(i["path"]).name for i in ok) == good
    assert set(failed) == {"truncated.jpg", "notes.png"}
    assert all(failed.values())
    assert "truncated.jpg" in res.stderr and "notes.png" in res.stderr
    assert len(_error_lines(res.stderr)) == 1 and "Traceback" not in res.stderr


def test_missing_model_and_no_images(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    image = tmp_path / "cell.jpg"
    shutil.copy(next(trained[0].rglob("*.jpeg")), image)

    res = _leuko("predict", "cell.jpg", cwd=tmp_path)  # no runs/latest here
    assert res.returncode == 2
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert "leuko train" in errors[0] and "--model" in errors[0]

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    res = _leuko("predict", str(tmp_path / "empty"), "--model", str(run))
    assert res.returncode == 2
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and "no images found" in errors[0]


def test_bundle_latest_pointer_and_bad_model_files(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    from leukocli.bundle import load_bundle, point_latest, resolve_run_dir

    _, run = trained
    runs = tmp_path / "runs"
    shutil.copytree(run, runs / "a")
    shutil.copytree(run, runs / "b")
    point_latest(runs / "a")
    point_latest(runs / "b")  # repointing replaces the link
    assert resolve_run_dir(runs / "latest") == (runs / "b").resolve()
    assert os.readlink(runs / "latest") == "b"  # relative: the runs folder can move

    (runs / "latest").unlink()
    (runs / "latest").write_text("a\n")  # systems without symlinks: a pointer file
    bundle = load_bundle(runs / "latest")
    assert bundle.run_dir == (runs / "a").resolve()
    assert bundle.img_size == SIZE
    assert bundle.classes == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]

    bare = tmp_path / "bare" / "m.keras"
    bare.parent.mkdir()
    shutil.copy(run / "model.keras", bare)
    assert load_bundle(bare).classes == [f"class_{i}" for i in range(4)]

    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(LeukoError, match="not a Keras model"):
        load_bundle(junk)
    with pytest.raises(LeukoError, match="leuko train"):
        load_bundle(tmp_path / "nowhere" / "latest")
