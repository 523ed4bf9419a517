"""`leuko evaluate` on a tiny model trained on synthetic smears: consistent outputs and
clear errors for the mistakes users make (no model, no splits, differently named classes).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import invoke

from leukocli.errors import LeukoError
from leukocli.evaluation.evaluate import parse_mapping


@pytest.fixture
def trained(tiny_run: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_run


def _grouped_manifest(where: Path, data: Path) -> Path:
    """path,label,group from the generator's ground truth (which smear each image shows)."""
    manifest = where / "grouped.csv"
    with (data / "sources.csv").open() as fh, manifest.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["path", "label", "group"])
        for row in csv.DictReader(fh):
            w.writerow([data / row["file"], row["file"].split("/")[0], row["source"]])
    return manifest


def _read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_json_dash_pipes_the_metrics_alone_to_stdout(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """`leuko evaluate --json - | jq .accuracy`: stdout is the JSON, the tables go to stderr."""
    data, run = trained
    out = tmp_path / "eval"
    done = invoke("evaluate", str(data), "--model", str(run), "--json", "-", "--out", str(out))
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == json.loads((out / "metrics.json").read_text())
    assert "accuracy" in done.stderr  # the summary table, out of the pipe's way
    assert not Path("-").exists()


def test_outputs_are_consistent_and_group_accuracy_uses_groups(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = trained
    manifest = _grouped_manifest(tmp_path, data)
    out = tmp_path / "eval"
    extra_json = tmp_path / "copy" / "m.json"
    done = invoke("evaluate", str(manifest), "--model", str(run), "--json", str(extra_json),
                  "--out", str(out), "--batch", "5")
    assert done.code == 0, done.stderr
    m: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(extra_json.read_text())
    assert (out / "confusion.png").stat().st_size > 1000
    assert not (run / "metrics.json").exists()  # --out was honoured

    cm = np.array(m["confusion_matrix"])
    n_images = sum(1 for _ in (data).rglob("*.jpeg"))
    assert m["n"] == n_images == cm.sum()
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert m["labels"] == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    for i, c in enumerate(m["labels"]):
        row = cm[i].sum()
        assert m["per_class"][c]["support"] == row
        assert m["per_class"][c]["recall"] == pytest.approx(cm[i, i] / row)
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi
    assert 0.0 <= m["ece"] <= 1.0
    assert m["tta"] is False

    rows = _read_predictions(out / "predictions.csv")
    assert len(rows) == m["n"]
    assert sum(int(r["correct"]) for r in rows) == np.trace(cm)
    for r in rows:
        assert Path(r["path"]).is_file()
        probs = [float(r[f"prob_{c}"]) for c in m["labels"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert r["predicted"] == m["labels"][int(np.argmax(probs))]

    # Group accuracy, recomputed from predictions.csv: mean probability per smear.
    groups: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    n_sources = len({r["group"] for r in rows})
    assert m["n_groups"] == n_sources == 16  # 4 smears per class, each rendered twice
    right = 0
    for members in groups.values():
        mean = np.mean([[float(r[f"prob_{c}"]) for c in m["labels"]] for r in members], axis=0)
        right += int(m["labels"][int(np.argmax(mean))] == members[0]["label"])
    assert m["group_accuracy"] == pytest.approx(right / n_sources)
    assert len(m["group_accuracy_ci"]) == 2


def _run(data: Path, run: Path, out: Path, *extra: str, code: int = 0) -> dict[str, Any]:
    """`leuko evaluate`, then the metrics.json it wrote into `out`."""
    done = invoke("evaluate", str(data), "--model", str(run), "--out", str(out), *extra)
    assert done.code == code, done.stderr
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def test_class_folder_without_groups_and_unreadable_image_left_out(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:

    data, run = trained
    copy = tmp_path / "data"
    for cls in ("EOSINOPHIL", "MONOCYTE"):
        shutil.copytree(data / cls, copy / cls)
    (copy / "MONOCYTE" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    m = _run(copy, run, tmp_path / "o", code=1)  # written, and the exit code says what's missing
    assert m["n"] == 16  # the broken file is excluded, not fatal
    assert m["n_unreadable"] == 1
    assert "group_accuracy" not in m
    # the model chooses among the two classes the data holds
    assert m["classes_scored"] == ["EOSINOPHIL", "MONOCYTE"]
    assert "LYMPHOCYTE" not in m["per_class"]


def test_ignore_unknown_skips_extra_classes(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    copy = tmp_path / "data"
    shutil.copytree(data / "NEUTROPHIL", copy / "NEUTROPHIL")
    shutil.copytree(data / "LYMPHOCYTE", copy / "BASOPHIL")
    invoke("evaluate", str(copy), "--model", str(run), "--out", str(tmp_path / "o")
           ).one_line_error(2, "BASOPHIL", "--ignore-unknown")
    m = _run(copy, run, tmp_path / "o", "--ignore-unknown")
    assert m["n"] == 8
    assert m["n_skipped_unknown"] == 8


def test_bad_map_and_missing_default_splits(trained: tuple[Path, Path], tmp_path: Path) -> None:
    classes = ["EOSINOPHIL", "LYMPHOCYTE"]
    with pytest.raises(LeukoError, match="OLD=NEW"):
        parse_mapping(["eosinophil"], classes)
    with pytest.raises(LeukoError, match="not a class of the model"):
        parse_mapping(["eos=EOS"], classes)
    invoke("evaluate", "--model", str(trained[1]), cwd=tmp_path).one_line_error(
        2, "run `leuko split DIR` first"
    )


def test_cli_lowercase_classes_are_the_models(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Another lab's lower-case folder names are the model's classes; --map still renames."""
    data, run = trained
    lower = tmp_path / "lower"
    for cls in ("EOSINOPHIL", "LYMPHOCYTE"):
        shutil.copytree(data / cls, lower / cls.lower())
    m = _run(lower, run, tmp_path / "o")
    assert m["n"] == 16
    assert m["per_class"]["EOSINOPHIL"]["support"] == 8
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n"] == 16
    swapped = _run(lower, run, tmp_path / "s", "--map", "eosinophil=LYMPHOCYTE",
                   "--map", "lymphocyte=EOSINOPHIL")
    assert swapped["per_class"]["LYMPHOCYTE"]["support"] == 8


def test_cli_missing_model_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "data" / "A").mkdir(parents=True)
    invoke("evaluate", str(tmp_path / "data"), "--model", "no-such-run", cwd=tmp_path
           ).one_line_error(2, "leuko train", "--model")


def test_group_by_option_when_split_provides_it(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = trained
    m = _run(data, run, tmp_path / "o", "--group-by", "pattern:^_")
    # Every synthetic name starts with '_': one group per class, scored on mean probability.
    assert m["n_groups"] == 4
