"""`leuko count`: every white cell of a whole synthetic field found, classified, counted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke
from PIL import Image

from leukocli.counting.count import window
from leukocli.counting.locate import locate_cells, match
from leukocli.data.synth import make_fields


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 480x640 fields with 0-3 white cells each, in VOC layout."""
    root = tmp_path_factory.mktemp("fields")
    make_fields(root, n=12, seed=2)
    return root


def test_every_cell_is_found_with_its_box(fields: Path, tmp_path: Path) -> None:
    done = invoke("count", str(fields / "JPEGImages"), "--model", "none", "--eval",
                  "--format", "json", "--out", str(tmp_path / "c"))
    assert done.code == 0, done.stderr
    e = json.loads(done.stdout)["evaluation"]
    assert e["photos_evaluated"] == 12 and e["true_positives"] > 10
    assert e["recall"] == 1.0 and e["precision"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_every_cell_is_found_on_other_seeds_too(seed: int, tmp_path: Path) -> None:
    """Not one lucky draw: tinted fields, pale nuclei and eosinophils' separate lobes."""
    made = make_fields(tmp_path, n=40, seed=seed)
    planted = found = matched = 0
    for m in made:
        truth = [b for _, b in m["cells"]]
        boxes = [c.box for c in locate_cells(Image.open(tmp_path / "JPEGImages" /
                                                        f"{m['name']}.jpg"))]
        planted, found = planted + len(truth), found + len(boxes)
        matched += len(match(truth, boxes))
    assert planted > 40 and matched == planted == found


def _disc_photo(discs: list[tuple[int, int, int]]) -> Image.Image:
    """Purple discs (cy, cx, r) on a pale pink background, 480x640."""
    yy, xx = np.mgrid[:480, :640]
    rgb = np.empty((480, 640, 3), np.float32)
    rgb[:] = (236, 214, 214)
    for cy, cx, r in discs:
        rgb[np.hypot(yy - cy, xx - cx) <= r] = (110, 60, 170)
    return Image.fromarray(rgb.astype(np.uint8))


def test_two_lobes_are_one_cell_two_touching_nuclei_two_cells_a_big_round_one_one() -> None:
    """BCCD's false positives were eosinophils cut into their lobes and large monocytes
    cut in two; two touching cells must still count as two."""
    cell = 0.4 * 480  # LocatorParams.cell: the expected cell diameter in photo pixels
    r = round(0.3 * cell)  # a nucleus about 0.6 of the cell across
    lobes = _disc_photo([(240, 320 - r, round(0.6 * r)), (240, 320 + r, round(0.6 * r))])
    assert len(locate_cells(lobes)) == 1
    r = round(0.35 * cell)  # two large nuclei that touch: 1.4 cells across, elongated
    touching = _disc_photo([(240, 320 - r, r), (240, 320 + r, r)])
    assert len(locate_cells(touching)) == 2
    big = _disc_photo([(240, 320, round(0.7 * cell))])
    assert len(locate_cells(big)) == 1


def test_the_stain_level_follows_the_background_not_the_crowd() -> None:
    """A field crowded with red cells (its median is red) must not turn the pale plasma
    between them into nuclei, and a close-up filled by one cell must still find it."""
    yy, xx = np.mgrid[:480, :640]
    rgb = np.empty((480, 640, 3), np.float32)
    rgb[:] = (232, 230, 230)  # plasma: neutral, the brightest
    red = (np.sin(yy / 9.0) + np.sin(xx / 11.0)) > -0.6  # red cells on ~70% of the field
    rgb[red] = (214, 150, 164)
    rgb[np.hypot(yy - 240, xx - 320) <= 58] = (110, 60, 170)  # one nucleus
    assert red.mean() > 0.6
    assert len(locate_cells(Image.fromarray(rgb.astype(np.uint8)))) == 1
    close = _disc_photo([(240, 320, 230)])  # one cell over half the photo
    assert len(locate_cells(close)) == 1


def test_the_locator_ramps_the_stain_as_the_cell_crop_does_without_tensorflow() -> None:
    """One stain ramp: the locator's named copy equals the crop layer's, and the locator
    stays free of TensorFlow (the reason it is a copy, not an import)."""
    from leukocli.counting import locate
    from leukocli.modeling import layers

    assert locate.STAIN_RAMP == layers.STAIN_RAMP
    code = "import sys, leukocli.counting.locate; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_outputs_parse_and_agree(fields: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((fields / "JPEGImages").glob("*.jpg"))[:4]:
        (photos / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (320, 240), (236, 226, 224)).save(photos / "empty.jpg")  # no cell
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    out = tmp_path / "c"
    done = invoke("count", str(photos), "--model", "none", "--out", str(out))
    assert done.code == 1, done.stderr  # one unreadable photo: reported, the rest counted
    assert "broken.jpg" in done.stderr and "differential count" in done.stdout
    cells = list(csv.DictReader((out / "cells.csv").open()))
    summary = json.loads((out / "counts.json").read_text())
    assert summary["total"]["cells"] == len(cells) > 0
    assert summary["photos"][str(photos / "empty.jpg")]["cells"] == 0  # a row, not an error
    rows = {r["photo"]: r for r in csv.DictReader((out / "counts.csv").open())}
    assert rows["TOTAL"]["cells"] == str(len(cells))
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(
        [f"{p.stem}.png" for p in photos.glob("*.jpg") if p.name != "broken.jpg"])


def test_counts_follow_the_cells_classes_with_a_model_trained_on_cells(
    fields: Path, tmp_path: Path
) -> None:
    """A classifier trained on cells as count cuts them out classifies the counted cells."""
    from leukocli.training.loop import train
    from leukocli.training.options import TrainOptions

    made = make_fields(tmp_path / "train", n=100, seed=11)
    rows = ["path,label"]
    for m in made:
        img = Image.open(tmp_path / "train" / "JPEGImages" / f"{m['name']}.jpg").convert("RGB")
        found = locate_cells(img)
        for i, j in match([b for _, b in m["cells"]], [c.box for c in found]):
            p = tmp_path / "cells" / f"{m['name']}_{i}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(window(np.asarray(img), found[j], (120, 160)).astype(np.uint8)
                            ).save(p)
            rows.append(f"{p},{m['cells'][i][0]}")
    (tmp_path / "cells.csv").write_text("\n".join(rows) + "\n")
    opts = TrainOptions(train_csv=str(tmp_path / "cells.csv"), val_csv=str(tmp_path / "cells.csv"),
                        img_size=(120, 160), batch=16, epochs=10, backbone="compact",
                        crop_cell=64, precision="float32", seed=1)
    run = train(opts, out=tmp_path / "run").run_dir
    done = invoke("count", str(fields / "JPEGImages"), "--model", str(run), "--eval",
                  "--format", "json", "--out", str(tmp_path / "c"))
    assert done.code == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["evaluation"]["class_accuracy"] >= 0.75  # chance is 0.25
    cells = list(csv.DictReader((tmp_path / "c" / "cells.csv").open()))
    for c in result["classes"]:
        assert result["total"]["count"][c] == sum(1 for r in cells if r["class"] == c)
