"""`leuko predict` and the saved-run bundle: scriptable output that agrees with evaluate,
partial failures that do not stop the rest, and one-line errors for missing models."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke

from leukocli.errors import LeukoError
from leukocli.modeling.bundle import load_bundle, point_latest, resolve_run_dir

SIZE = (75, 75)
CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


@pytest.fixture
def trained(tiny_run: tuple[Path, Path]) -> tuple[Path, Path]:
    """A synthetic class-folder dataset and a 2-epoch tiny CNN saved as runs/tiny."""
    return tiny_run


def _evaluate_predictions(data: Path, run: Path, out: Path) -> dict[str, dict[str, str]]:
    done = invoke("evaluate", str(data), "--model", str(run), "--out", str(out))
    assert done.code == 0, done.stderr
    with (out / "predictions.csv").open() as fh:
        return {str(Path(r["path"]).resolve()): r for r in csv.DictReader(fh)}


def test_json_and_csv_agree_with_evaluate(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    truth = _evaluate_predictions(data, run, tmp_path / "eval")
    classes = CLASSES

    done = invoke("predict", str(data), "--model", str(run), "--top-k", "3", "--format", "json",
                  "--batch", "5")
    assert done.code == 0, done.stderr
    items: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(items) == len(truth) == 32
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
    done = invoke("predict", glob, str(one), "--model", str(run), "--top-k", "2",
                  "--format", "csv")
    assert done.code == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == [
        "path", "predicted", "probability", "top2", "top2_probability",
        *[f"prob_{c}" for c in classes],
    ]
    assert len(rows) == 8 + 1
    for r in rows:
        ref = truth[str(Path(r["path"]).resolve())]
        assert r["predicted"] == ref["predicted"]
        assert float(r["probability"]) == pytest.approx(float(ref["confidence"]), abs=1e-5)
        assert r["top2"] != r["predicted"]
        assert float(r["top2_probability"]) <= float(r["probability"])


def test_table_output_and_bad_options(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    image = next((data / "LYMPHOCYTE").glob("*.jpeg"))
    truth = _evaluate_predictions(data, run, tmp_path / "eval")[str(image.resolve())]
    done = invoke("predict", str(image.relative_to(data)), "--model", str(run), "--top-k", "2",
                  cwd=data)
    assert done.code == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if image.name[:8] in line)
    assert truth["predicted"] in row  # the class evaluate found, on the image's own row
    assert f"{float(truth['confidence']):.3f}" in row
    assert "2nd" in done.stdout
    args = (str(image), "--model", str(run))
    invoke("predict", *args, "--format", "xml").one_line_error(2, "--format must be one of")
    invoke("predict", *args, "--top-k", "0").one_line_error(2, "--top-k must be at least 1")


def test_corrupt_image_among_good_ones(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    folder = tmp_path / "batch"
    shutil.copytree(data / "NEUTROPHIL", folder)
    good = sorted(p.name for p in folder.glob("*.jpeg"))
    (folder / "truncated.jpg").write_bytes(next(folder.glob("*.jpeg")).read_bytes()[:300])
    (folder / "notes.png").write_text("not an image")

    res = invoke("predict", str(folder), "--model", str(run), "--format", "json")
    assert res.code == 1, res.stderr  # EXIT_PARTIAL: something failed, rest classified
    items = json.loads(res.stdout)  # stdout stays clean JSON despite the failures
    ok = [i for i in items if "predicted" in i]
    failed = {Path(i["path"]).name: i["error"] for i in items if "error" in i}
    assert sorted(Path(i["path"]).name for i in ok) == good
    assert set(failed) == {"truncated.jpg", "notes.png"}
    assert all(failed.values())
    assert "truncated.jpg" in res.stderr and "notes.png" in res.stderr
    assert len(res.error_lines) == 1 and "Traceback" not in res.stderr


def test_missing_model_and_no_images(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    image = tmp_path / "cell.jpg"
    shutil.copy(next(trained[0].rglob("*.jpeg")), image)

    invoke("predict", "cell.jpg", "--model", "no-such-run", cwd=tmp_path).one_line_error(
        2, "leuko train", "--model")
    # no runs/latest here: the shipped classifier answers, and says so in one line
    shipped = invoke("predict", "cell.jpg", "--format", "json", cwd=tmp_path)
    assert shipped.code == 0, shipped.stderr
    assert shipped.stderr.count("shipped classifier wbc") == 1
    assert json.loads(shipped.stdout)[0]["predicted"]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    invoke("predict", str(tmp_path / "empty"), "--model", str(run)).one_line_error(
        2, "no images found"
    )


def test_bundle_latest_pointer_and_bad_model_files(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
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
    with pytest.raises(LeukoError, match="has no leuko.json beside it"):
        load_bundle(bare)  # a Keras file without leuko's metadata: its classes are unknown

    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(LeukoError, match="not a Keras model"):
        load_bundle(junk)
    with pytest.raises(LeukoError, match="lk.train"):
        load_bundle(tmp_path / "nowhere" / "latest")
