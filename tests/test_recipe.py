"""The CPU recipe's parts: cell crop inside the model, fused augmentation, test-time
augmentation, and recipe resolution. Small tensors only; no training beyond a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke
from PIL import Image

from leukocli.errors import LeukoError


def _smear(h: int, w: int, cy: int, cx: int, r: int = 10) -> np.ndarray:
    """A pink field with one purple disc centred at (cy, cx)."""
    img = np.zeros((h, w, 3), np.float32)
    img[...] = (225.0, 180.0, 190.0)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[disc] = (110.0, 60.0, 190.0)
    return img


def test_cell_crop_centres_on_the_purple_cell_and_survives_save_load(tmp_path: Path) -> None:
    from leukocli._tf import keras
    from leukocli.modeling.layers import CellCrop

    batch = np.stack([_smear(120, 160, 30, 40), _smear(120, 160, 90, 120)])
    crops = CellCrop(size=32, window=0.5)(batch).numpy()
    assert crops.shape == (2, 32, 32, 3)
    for crop in crops:
        purple = (crop[..., 2] - crop[..., 0]) > 40
        ys, xs = np.nonzero(purple)
        # the disc sits in the middle of the crop, whatever its place in the image
        assert abs(ys.mean() - 15.5) < 2.5 and abs(xs.mean() - 15.5) < 2.5

    # no purple at all: the centre is cropped, not a corner
    blank = np.full((1, 120, 160, 3), 200.0, np.float32)
    blank[0, 50:70, 70:90] = 0.0  # a dark (not purple) patch in the centre
    centre = CellCrop(size=20, window=20 / 120)(blank).numpy()[0]
    assert centre.mean() < 20.0

    inp = keras.Input((120, 160, 3))
    out = keras.layers.GlobalAveragePooling2D()(CellCrop(32, 0.5)(inp))
    model = keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(again.predict_on_batch(batch), model.predict_on_batch(batch),
                               rtol=1e-6)


def test_cell_sized_crop_gives_a_cell_the_same_size_however_it_is_framed() -> None:
    """The disc fills the same share of the crop in a photo and in the photo zoomed 2x;
    a crop that takes a fixed share of the image would see it twice as large."""
    from PIL import Image as PILImage

    from leukocli.modeling.layers import CellCrop

    photo = _smear(120, 160, 60, 80, r=14)
    zoomed = np.asarray(PILImage.fromarray(photo[30:90, 40:120].astype(np.uint8)).resize(
        (160, 120), PILImage.Resampling.BILINEAR), np.float32)

    def disc_share(layer: CellCrop, image: np.ndarray) -> float:
        crop = layer(image[None]).numpy()[0]
        return float(((crop[..., 2] - crop[..., 0]) > 40).mean())

    sized = CellCrop(size=48, scale=1.9)
    assert disc_share(sized, zoomed) == pytest.approx(disc_share(sized, photo), rel=0.15)
    fixed = CellCrop(size=48, window=0.6)
    assert disc_share(fixed, zoomed) > 3 * disc_share(fixed, photo)
    # the crop is differentiable in the image: Grad-CAM can look through it
    from leukocli._tf import tf

    x = tf.constant(photo[None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(sized(x))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, x)))) > 0


def test_model_with_crop_cell_takes_whole_images() -> None:
    from leukocli.modeling.model import build_model

    model = build_model("compact", (120, 160), 4, crop_cell=48)
    assert model.input_shape == (None, 120, 160, 3)
    assert model.get_layer("cell_crop").output.shape[1:3] == (48, 48)
    probs = model.predict_on_batch(np.stack([_smear(120, 160, 60, 80)]))
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-5


def test_strong_augmentation_keeps_shape_and_range_and_varies() -> None:
    from leukocli._tf import tf
    from leukocli.modeling.augment import AUGMENT_POLICIES, augment_batch

    x = tf.constant(np.stack([_smear(60, 80, 30, 40)] * 4))
    y = augment_batch(x, AUGMENT_POLICIES["strong"]).numpy()
    assert y.shape == (4, 60, 80, 3)
    assert y.min() >= 0.0 and y.max() <= 255.0
    assert not np.allclose(y[0], y[1])


def test_tta_views_start_with_the_image_and_exact_flips() -> None:
    from leukocli.modeling.augment import MAX_TTA, tta_views

    x = np.random.default_rng(0).uniform(0, 255, (2, 20, 30, 3)).astype(np.float32)
    views = [v.numpy() for v in tta_views(x, MAX_TTA)]
    assert len(views) == MAX_TTA
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1], x[:, :, ::-1])
    np.testing.assert_array_equal(views[2], x[:, ::-1])
    with pytest.raises(LeukoError, match="tta must be between 1"):
        tta_views(x, MAX_TTA + 1)


def test_tta_quarter_turns_are_the_squares_other_symmetries() -> None:
    """On a square crop the quarter-turn views must be exact turns and transposes."""
    from leukocli.modeling.augment import tta_views

    x = np.random.default_rng(1).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    views = [v.numpy() for v in tta_views(x, 16)]
    expected = [
        np.rot90(x, 1, axes=(1, 2)),
        np.rot90(x, -1, axes=(1, 2)),
        np.rot90(x, 1, axes=(1, 2))[:, :, ::-1],  # anti-transpose
        x.transpose(0, 2, 1, 3),
    ]
    for got, want in zip(views[12:16], expected, strict=True):
        np.testing.assert_allclose(got, want, atol=0.01)


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained tiny model saved as a run, and a folder of images per class."""
    from leukocli._tf import keras
    from leukocli.modeling.bundle import save_bundle
    from leukocli.modeling.model import build_model

    root = tmp_path_factory.mktemp("tta")
    classes = ["A", "B"]
    rng = np.random.default_rng(1)
    for c in classes:
        (root / "data" / c).mkdir(parents=True)
        for i in range(3):
            img = _smear(40, 40, int(rng.integers(10, 30)), int(rng.integers(10, 30)))
            Image.fromarray(img.astype(np.uint8)).save(root / "data" / c / f"{i}.png")
    # a uniform image: every flip and turn (with reflected edges) is the same image
    Image.new("RGB", (40, 40), (150, 90, 200)).save(root / "data" / "A" / "flat.png")
    keras.utils.set_random_seed(0)
    model = build_model("compact", (40, 40), 2, crop_cell=0, head_filters=8)
    run = root / "runs" / "t"
    save_bundle(run, model, {"classes": classes, "img_size": [40, 40], "backbone": "compact"})
    return root / "data", run


def test_tta_agrees_on_an_image_whose_views_are_identical(flat_run: tuple[Path, Path]) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle

    data, run = flat_run
    bundle = load_bundle(run)
    flat = [data / "A" / "flat.png"]
    plain = predict_probs(bundle, flat)
    tta = predict_probs(bundle, flat, tta=8)
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    # and on ordinary images TTA really averages different views
    others = sorted((data / "B").glob("*.png"))
    assert not np.allclose(predict_probs(bundle, others, tta=8), predict_probs(bundle, others))


def test_evaluate_records_tta_in_metrics(flat_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = flat_run
    for out, extra in (("plain", ()), ("tta", ("--tta", "4"))):
        done = invoke("evaluate", str(data), "--model", str(run), "--out", str(tmp_path / out),
                      *extra)
        assert done.code == 0, done.stderr
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    tta = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert plain["tta"] is False and plain["tta_views"] == 1
    assert tta["tta"] is True and tta["tta_views"] == 4
    invoke("evaluate", str(data), "--model", str(run), "--out", str(tmp_path / "bad"),
           "--tta", "0").one_line_error(2, "--tta must be between 1 (off) and 20")


def test_recipe_resolution() -> None:
    from leukocli.training.options import TrainOptions, resolve_recipe

    cpu = resolve_recipe(TrainOptions(backbone="compact"))
    assert (cpu.name, cpu.crop_cell, cpu.augment, cpu.schedule) == ("cpu", 128, "strong", "cosine")
    assert cpu.epochs == 8
    assert resolve_recipe(TrainOptions(backbone="compact", epochs=3)).epochs == 3
    assert cpu.label_smoothing == pytest.approx(0.1)
    assert cpu.keep == "last"
    paper = resolve_recipe(TrainOptions(backbone="inceptionresnetv2"))
    assert (paper.name, paper.crop_cell, paper.augment, paper.epochs) == ("paper", 0, "paper", 30)
    assert paper.keep == "best"
    assert resolve_recipe(TrainOptions(backbone="compact", keep="Best")).keep == "best"
    with pytest.raises(LeukoError, match="unknown keep 'first'"):
        resolve_recipe(TrainOptions(backbone="compact", keep="first"))
    mixed = resolve_recipe(TrainOptions(backbone="compact", crop_cell=0, label_smoothing=0.0))
    assert (mixed.crop_cell, mixed.label_smoothing) == (0, 0.0)
    with pytest.raises(LeukoError, match="unknown recipe 'fast'"):
        resolve_recipe(TrainOptions(recipe="fast"))


class _FakeRun:
    """What RunRecorder writes to, without a run directory: which epochs were saved."""

    def __init__(self) -> None:
        self.meta: dict = {"best": None}
        self.saved: list[int] = []

    def append_history(self, row: dict) -> None:
        pass

    def write_meta(self) -> None:
        pass

    def save_model(self, model: object) -> None:
        self.saved.append(int(self.meta["epochs_done"]))


@pytest.mark.parametrize(("keep", "saved", "kept"), [("best", [1, 2], 2), ("last", [1, 2, 3], 3)])
def test_keep_decides_which_epoch_is_on_disk(keep: str, saved: list[int], kept: int) -> None:
    """best: the lowest val loss stays saved; last: the final epoch, whatever its val loss."""
    from leukocli.training.callbacks import RunRecorder

    run = _FakeRun()
    rec = RunRecorder(run, phase=0, keep=keep)  # type: ignore[arg-type]
    for epoch, val_loss in enumerate((1.0, 0.5, 0.8)):
        rec.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss, "val_accuracy": 0.5})
    assert run.saved == saved
    assert run.meta["best"]["epoch"] == kept
