"""Grad-CAM: the heatmap lands on the cell, through the cell crop, for every kind of backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from leukocli.data.render import CLASSES, Cell, render_field

SIZE = (120, 160)
RADIUS = 16.0


def _fields(root: Path, n: int, seed: int) -> pd.DataFrame:
    """Smears whose only class evidence is inside the white cell: one radius for all."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cell = Cell(CLASSES[i % 4], rng.uniform(0.35, 0.65) * SIZE[0],
                    rng.uniform(0.35, 0.65) * SIZE[1], RADIUS)
        path = root / cell.label / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        render_field(SIZE, lambda c=cell: [c], rng).save(path)
        rows.append({"path": str(path), "label": cell.label, "cy": cell.cy, "cx": cell.cx})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("cam")
    train, val = _fields(root / "train", 120, 1), _fields(root / "val", 24, 2)
    train[["path", "label"]].to_csv(root / "train.csv", index=False)
    val[["path", "label"]].to_csv(root / "val.csv", index=False)
    return root, train, val


def _train(root: Path, name: str, size: tuple[int, int] = SIZE, **kw: object) -> Path:
    from leukocli.training.loop import train
    from leukocli.training.options import TrainOptions

    opts = TrainOptions(train_csv=str(root / "train.csv"), val_csv=str(root / "val.csv"),
                        img_size=size, batch=16, backbone="compact", weights="none",
                        precision="float32", seed=2, **kw)  # type: ignore[arg-type]
    result = train(opts, out=root / "runs" / name)
    assert result.best.get("val_accuracy", 0) > 0.6, result
    return result.run_dir


def _mass_in_disk(run: Path, val: pd.DataFrame, size: tuple[int, int] = SIZE) -> np.ndarray:
    from leukocli.evaluation.explain import explain
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.runtimes import load_images

    bundle = load_bundle(run)
    x = load_images(list(val.path), size)
    ex = explain(bundle, x)
    assert ex.maps.shape == (len(val), *size)  # the input image's size
    assert np.isfinite(ex.maps).all() and ex.maps.min() >= 0 and ex.maps.max() <= 1
    f = size[0] / SIZE[0]
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    return np.array([m[(ys - f * cy) ** 2 + (xs - f * cx) ** 2 <= (f * RADIUS) ** 2].sum()
                     / m.sum() for m, cy, cx in zip(ex.maps, val.cy, val.cx, strict=True)])


def test_the_map_lands_on_the_cell_through_the_cell_crop(
    fields: tuple[Path, pd.DataFrame, pd.DataFrame]
) -> None:
    root, _, val = fields
    # a crop 1.15 cell diameters wide: the cell fills it, so a map put back in the wrong
    # place (or not through the crop) falls outside the disk
    run = _train(root, "crop", epochs=10, crop_cell=96, crop_scale=1.15)
    mass = _mass_in_disk(run, val)
    assert mass.mean() >= 0.9, mass  # the map was put back where the crop came from
    done = invoke("explain", str(root / "val" / "MONOCYTE"), "--model", str(run), "--out",
                  str(root / "maps"), "--class", "EOSINOPHIL", "--format", "json")
    assert done.code == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 6 and all(r["explained"] == "EOSINOPHIL" for r in rows)
    assert all(Path(r["gradcam"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for r in rows)
    invoke("explain", str(root / "val"), "--model", str(run), "--class", "BASOPHIL"
           ).one_line_error(2, "--class 'BASOPHIL' is not a class of the model")


def test_the_map_without_a_crop_beats_a_uniform_one(
    fields: tuple[Path, pd.DataFrame, pd.DataFrame]
) -> None:
    root, _, val = fields
    run = _train(root, "whole", size=(60, 80), epochs=7, crop_cell=0)
    disk_share = np.pi * RADIUS**2 / (SIZE[0] * SIZE[1])
    assert _mass_in_disk(run, val, (60, 80)).mean() > 2 * disk_share


def test_a_keras_applications_backbone_is_explained_at_input_size(tmp_path: Path) -> None:
    import keras

    from leukocli.evaluation.explain import explain
    from leukocli.modeling.bundle import load_bundle, save_bundle
    from leukocli.modeling.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model("mobilenetv2", (64, 64), 4)
    save_bundle(tmp_path / "run", model, {"classes": list(CLASSES), "img_size": [64, 64],
                                          "backbone": "mobilenetv2"})
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    ex = explain(load_bundle(tmp_path / "run"), x, classes=[1, 2])
    assert ex.maps.shape == (2, 64, 64) and ex.explained == [1, 2]
    assert np.isfinite(ex.maps).all()
    # gradients reach the nested backbone's last convolution: an untrained head may give a
    # class no positive evidence (an all-zero map), but every image has a class that has
    bundle = load_bundle(tmp_path / "run")
    maps = np.stack([explain(bundle, x, classes=[c, c]).maps for c in range(4)])
    assert (maps.max(axis=(0, 2, 3)) == 1.0).all() and (maps.std(axis=(2, 3)) > 0).any()
