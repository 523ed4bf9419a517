"""Models: raw-pixel input, preprocessing inside, float32 softmax, weights resolution."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from leukocli.errors import LeukoError
from leukocli.modeling.backbones import (
    BACKBONES,
    check_input_size,
    get_backbone_spec,
    resolve_weights,
)
from leukocli.modeling.model import build_model, get_backbone, set_backbone_trainable


def test_backbone_names_and_minimum_sizes() -> None:
    for name in ("inceptionresnetv2", "xception", "resnet50v2", "inceptionv3", "mobilenetv2",
                 "densenet121", "efficientnetb0", "compact"):
        assert get_backbone_spec(name).name == name
    assert get_backbone_spec("InceptionResNetV2").name == "inceptionresnetv2"
    with pytest.raises(LeukoError, match="unknown backbone 'resnet9'.*inceptionresnetv2"):
        get_backbone_spec("resnet9")
    with pytest.raises(LeukoError, match=r"60x60' is too small for inceptionresnetv2.*75x75"):
        check_input_size(BACKBONES["inceptionresnetv2"], (60, 60))
    check_input_size(BACKBONES["inceptionresnetv2"], (75, 75))


def test_weights_option(tmp_path: Path) -> None:
    irv2, compact = BACKBONES["inceptionresnetv2"], BACKBONES["compact"]
    assert resolve_weights(irv2, "auto") == "imagenet"
    assert resolve_weights(compact, "auto") is None
    assert resolve_weights(irv2, "none") is None
    with pytest.raises(LeukoError, match="no such file"):
        resolve_weights(irv2, str(tmp_path / "missing.h5"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(LeukoError, match=r"\.h5"):
        resolve_weights(irv2, str(tmp_path / "w.txt"))
    with pytest.raises(LeukoError, match="no ImageNet weights"):
        resolve_weights(compact, "imagenet")


def test_model_takes_raw_pixels_and_roundtrips_without_custom_objects(tmp_path: Path) -> None:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("compact", (40, 48), 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.input_shape == (None, 40, 48, 3)
    x = np.random.default_rng(0).uniform(0, 255, (3, 40, 48, 3)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.dtype == np.float32 and probs.shape == (3, 4)  # softmax stays float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), probs, rtol=1e-4, atol=1e-5)


def test_tf_style_backbone_scales_pixels_to_minus_one_one() -> None:
    model = build_model("mobilenetv2", (32, 32), 3)
    scale = model.get_layer("scale_to_pm1")
    out = np.asarray(scale(np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")))
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)
    # the paper's head, in order, after the backbone
    names = [layer.name for layer in model.layers]
    head = ["head_conv", "head_bn", "head_pool", "head_dropout", "head_flatten", "logits", "probs"]
    assert names[-len(head):] == head
    set_backbone_trainable(model, False)
    assert not get_backbone(model).trainable
    set_backbone_trainable(model, True, unfreeze=5)
    trainable = [layer.trainable for layer in get_backbone(model).layers]
    assert not any(trainable[:-5]) and any(trainable[-5:])


def test_imagenet_offline_names_missing_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    def offline(fname: str | None = None, origin: str | None = None, **_: object) -> str:
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(LeukoError) as err:
        build_model("mobilenetv2", (96, 96), 4, weights="imagenet")
    msg = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in msg
    assert "https://storage.googleapis.com/" in msg
    assert "~/.keras/models/" in msg and "weights=PATH" in msg
    assert "backbone='compact' weights='pbc'" in msg  # the shipped alternative, offline
    assert "\n" not in msg
    from leukocli.cli.app import CLI

    said = err.value.spelled(CLI)  # what `leuko train` prints
    assert "--weights PATH" in said and "--backbone compact --weights pbc" in said


def test_weights_path_loads_into_backbone(tmp_path: Path) -> None:
    """The --weights PATH route, with a backbone weights file the test saves itself."""
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    path = tmp_path / "mobilenetv2_notop.weights.h5"
    source.save_weights(path)
    model = build_model("mobilenetv2", (32, 32), 4, weights=resolve_weights(
        BACKBONES["mobilenetv2"], str(path)))
    got = get_backbone(model).get_weights()
    want = source.get_weights()
    assert len(got) == len(want)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_weights_file_that_does_not_fit(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(LeukoError, match="cannot load into the mobilenetv2 backbone"):
        build_model("mobilenetv2", (32, 32), 4, weights=str(bogus))
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet.weights.h5"
    other.save_weights(path)
    with pytest.raises(LeukoError, match="weights=.*mobilenet.weights.h5"):
        build_model("resnet50v2", (32, 32), 4, weights=str(path))


@pytest.mark.parametrize("shape", [(3, 240, 320), (2, 75, 75), (1, 33, 50)])
def test_the_crops_block_and_box_means_are_tensorflows_pooling(shape: tuple[int, ...]) -> None:
    """The cell crop averages with reshapes and matrix products (TensorFlow's CPU pooling
    is ten times slower); every crop a saved model makes must come out as it did."""
    import tensorflow as tf

    from leukocli.modeling.layers import block_mean, box_mean

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (*shape, 3)).astype(np.float32))
    np.testing.assert_allclose(block_mean(x, 4), tf.nn.avg_pool2d(x, 4, 4, "VALID"), atol=1e-4)
    coarse = x[..., 0] / 255.0
    np.testing.assert_allclose(box_mean(coarse, 4),
                               tf.nn.avg_pool2d(coarse[..., None], 9, 1, "SAME")[..., 0],
                               atol=1e-5)
