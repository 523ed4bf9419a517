"""The tf.data loader: every format decodes to the same RGB pixels, in a stable order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukocli.modeling.loader import build_dataset


@pytest.fixture
def images(tmp_path: Path) -> list[tuple[Path, np.ndarray]]:
    """One small image per supported format (lossless ones keep exact pixels)."""
    rng = np.random.default_rng(0)
    out = []
    for i, ext in enumerate(("png", "bmp", "tif", "tiff", "jpg")):
        arr = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        if ext == "jpg":  # smooth, so JPEG keeps it close
            yy, xx = np.mgrid[0:30, 0:40]
            arr = np.stack([yy * 8, xx * 6, 255 - yy * 8], axis=-1).astype(np.uint8)
        p = tmp_path / f"im{i}.{ext}"
        Image.fromarray(arr).save(p)
        out.append((p, arr))
    gray = rng.integers(0, 256, size=(30, 40), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.tif")
    out.append((tmp_path / "gray.tif", np.stack([gray] * 3, axis=-1)))
    rgba = rng.integers(0, 256, size=(30, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out.append((tmp_path / "rgba.png", rgba[..., :3]))
    return out


def test_formats_decode_to_rgb_0_255_float32(images: list[tuple[Path, np.ndarray]]) -> None:
    paths = [str(p) for p, _ in images]
    ds = build_dataset(paths, None, (30, 40), batch_size=len(paths))
    (batch,) = list(ds)
    x = batch.numpy()
    assert x.dtype == np.float32 and x.shape == (len(paths), 30, 40, 3)
    for (p, arr), got in zip(images, x, strict=True):
        if p.suffix == ".jpg":
            assert np.abs(got - arr).mean() < 8  # lossy, but the same picture
        else:
            np.testing.assert_array_equal(got, arr.astype(np.float32), err_msg=p.name)


def test_resize_and_labels_in_order(images: list[tuple[Path, np.ndarray]]) -> None:
    paths = [str(p) for p, _ in images]
    labels = list(range(len(paths)))
    ds = build_dataset(paths, labels, (16, 24), batch_size=3)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    assert [x.shape[1:] for x in xs] == [(16, 24, 3)] * len(xs)
    assert np.concatenate(ys).tolist() == labels  # evaluation order is the input order
    assert 0 <= min(x.min() for x in xs) and max(x.max() for x in xs) <= 255


def test_one_hot_labels(images: list[tuple[Path, np.ndarray]]) -> None:
    paths = [str(p) for p, _ in images[:3]]
    ds = build_dataset(paths, [0, 2, 1], (30, 40), batch_size=3, n_classes=3)
    _, y = next(iter(ds))
    np.testing.assert_array_equal(y.numpy(), np.eye(3)[[0, 2, 1]])


def test_training_reshuffles_and_augments(images: list[tuple[Path, np.ndarray]]) -> None:
    paths = [str(p) for p, _ in images] * 4
    labels = list(range(len(paths)))
    ds = build_dataset(paths, labels, (30, 40), batch_size=len(paths), training=True, seed=1)
    orders = [next(iter(ds))[1].numpy().tolist() for _ in range(3)]
    assert all(sorted(o) == labels for o in orders)  # every image once per epoch
    assert len({tuple(o) for o in orders}) > 1  # a new order each epoch
    plain = build_dataset(paths, labels, (30, 40), batch_size=len(paths))
    aug = build_dataset(paths, labels, (30, 40), len(paths), training=True, augment=True)
    x_plain = next(iter(plain))[0].numpy()
    x_aug, y_aug = (t.numpy() for t in next(iter(aug)))
    assert x_aug.shape == x_plain.shape and x_aug.dtype == np.float32
    assert not np.allclose(x_aug, x_plain[y_aug])  # pixels were transformed


def test_other_aspect_ratios_are_fitted_not_stretched(tmp_path: Path) -> None:
    """A square photo in a 3:4 frame keeps its shape (black bars), in TensorFlow and in
    the TensorFlow-free loader that exported models use."""
    from leukocli.modeling.runtimes import load_images

    img = np.zeros((60, 60, 3), np.uint8)
    img[20:40, 20:40] = 255  # a square in the middle
    Image.fromarray(img).save(tmp_path / "sq.png")
    for x in (np.asarray(build_dataset([str(tmp_path / "sq.png")], None, (60, 80), 1)
                         .unbatch().take(1).get_single_element()),
              load_images([tmp_path / "sq.png"], (60, 80))[0]):
        assert x.shape == (60, 80, 3)
        assert x[:, :10].max() == 0 and x[:, -10:].max() == 0  # bars left and right
        ys, xs = np.nonzero(x[..., 0] > 128)
        assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # still a square
