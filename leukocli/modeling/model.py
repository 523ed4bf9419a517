"""Backbones, the paper's classification head, and weights resolution.

The model takes raw 0-255 float32 RGB of shape (None, h, w, 3): each backbone's own
input scaling is a built-in Keras layer inside the model, so a saved `model.keras`
loads with plain `keras.models.load_model` and predict needs no preprocessing flags.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._tf import keras
from .errors import LeukoError

BACKBONE_LAYER = "backbone"
KERAS_CACHE = "~/.keras/models/"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it: constructor, input scaling, minimum size."""

    name: str
    builder: Callable[..., keras.Model] | None  # None: the from-scratch `compact` CNN
    preprocessing: str  # "tf" ([-1, 1]), "torch" (ImageNet mean/std), "none", "unit" (/255)
    min_size: int
    has_imagenet: bool = True

    def describe_preprocessing(self) -> str:
        return {
            "tf": "inside the model: Rescaling(1/127.5, offset=-1) maps raw 0-255 RGB to [-1, 1]",
            "torch": "inside the model: Rescaling(1/255) then ImageNet mean/std Normalization",
            "none": "inside the model: the backbone rescales raw 0-255 RGB itself",
            "unit": "inside the model: Rescaling(1/255) maps raw 0-255 RGB to [0, 1]",
        }[self.preprocessing]


def _apps() -> Any:
    return keras.applications


BACKBONES: dict[str, BackboneSpec] = {
    "inceptionresnetv2": BackboneSpec(
        "inceptionresnetv2", lambda **kw: _apps().InceptionResNetV2(**kw), "tf", 75
    ),
    "xception": BackboneSpec("xception", lambda **kw: _apps().Xception(**kw), "tf", 71),
    "resnet50v2": BackboneSpec("resnet50v2", lambda **kw: _apps().ResNet50V2(**kw), "tf", 32),
    "inceptionv3": BackboneSpec("inceptionv3", lambda **kw: _apps().InceptionV3(**kw), "tf", 75),
    "mobilenetv2": BackboneSpec("mobilenetv2", lambda **kw: _apps().MobileNetV2(**kw), "tf", 32),
    "densenet121": BackboneSpec(
        "densenet121", lambda **kw: _apps().DenseNet121(**kw), "torch", 32
    ),
    "efficientnetb0": BackboneSpec(
        "efficientnetb0", lambda **kw: _apps().EfficientNetB0(**kw), "none", 32
    ),
    "compact": BackboneSpec("compact", None, "unit", 32, has_imagenet=False),
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name (case-insensitive); LeukoError listing the choices."""
    key = (name or "").strip().lower().replace("-", "").replace("_", "")
    if key not in BACKBONES:
        raise LeukoError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        )
    return BACKBONES[key]


def check_input_size(spec: BackboneSpec, img_size: tuple[int, int]) -> None:
    """Refuse sizes the backbone cannot take, before anything is built."""
    h, w = img_size
    if h < spec.min_size or w < spec.min_size:
        raise LeukoError(
            f"--img {h}x{w} is too small for {spec.name}: its minimum input is "
            f"{spec.min_size}x{spec.min_size}"
        )


def resolve_weights(spec: BackboneSpec, weights: str) -> str | None:
    """Turn the --weights option into 'imagenet', None (from scratch) or a file path.

    'auto' means ImageNet weights when the backbone has them, none for `compact`.
    """
    text = (weights or "auto").strip()
    low = text.lower()
    if low == "auto":
        return "imagenet" if spec.has_imagenet else None
    if low in ("none", "scratch", "random"):
        return None
    if low == "imagenet":
        if not spec.has_imagenet:
            raise LeukoError(f"{spec.name} has no ImageNet weights; use --weights none")
        return "imagenet"
    path = Path(text).expanduser()
    if not path.exists():
        raise LeukoError(
            f"--weights {text}: no such file (use imagenet, none, or a .h5/.weights.h5 file)"
        )
    if not path.is_file() or not path.name.lower().endswith((".h5", ".hdf5")):
        raise LeukoError(f"--weights {text}: expected a Keras weights file (.h5 or .weights.h5)")
    return str(path.resolve())


def _preprocessing_layers(spec: BackboneSpec) -> list[keras.layers.Layer]:
    if spec.preprocessing == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_pm1")]
    if spec.preprocessing == "torch":
        return [
            keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit"),
            keras.layers.Normalization(
                mean=list(_IMAGENET_MEAN),
                variance=[s * s for s in _IMAGENET_STD],
                name="imagenet_norm",
            ),
        ]
    if spec.preprocessing == "unit":
        return [keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")]
    return []


def _compact_backbone(img_size: tuple[int, int], bn_momentum: float = 0.5) -> keras.Model:
    """A small from-scratch CNN: quick on a CPU, enough for synthetic or easy data.

    BatchNormalization uses a fast-moving average (momentum 0.5 unless told otherwise):
    with few steps per epoch the default 0.99 leaves inference statistics far behind the
    training ones, and validation accuracy sits at chance for many epochs. With hundreds
    of steps per epoch a slower average (0.9) gives steadier validation numbers.
    """
    inputs = keras.Input((img_size[0], img_size[1], 3))
    x = inputs
    for i, filters in enumerate((32, 64, 128, 128)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"c{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"c{i}_bn")(x)
        x = keras.layers.ReLU(name=f"c{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"c{i}_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


@keras.saving.register_keras_serializable(package="leuko")
class CellCrop(keras.layers.Layer):
    """Find the stained white cell and crop a square around it, inside the model.

    Every smear is a pink field of red cells with one purple leukocyte; the nucleus is
    what tells the classes apart, so a network that sees a centred crop at higher
    resolution spends its capacity on it instead of on the background, and it no longer
    has to learn invariance to where the cell sits. Being a layer, the crop is saved
    with the model: evaluate and predict feed whole images and need no flags.

    The cell is the peak of a blurred "blue minus red" map (purple is bluer than red
    cells and background); with no purple at all, the crop falls back to the centre.
    `window` is the crop's side as a fraction of the image's shorter side.
    """

    def __init__(self, size: int = 96, window: float = 0.6, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # locating needs 0-255 precision
        super().__init__(**kwargs)
        self.size = int(size)
        self.window = float(window)

    def call(self, images: Any) -> Any:
        from ._tf import tf

        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        b = shape[0]
        hf, wf = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        half = self.window * tf.minimum(hf, wf) / 2.0
        purple = tf.nn.relu(x[..., 2:3] - x[..., 0:1] - 20.0)
        purple = tf.nn.avg_pool2d(purple, 4, 4, "VALID")[..., 0]  # (b, h/4, w/4)
        # 1) the densest purple spot: a box blur's peak (zero-padded so edges are not favoured)
        blurred = tf.nn.avg_pool2d(
            tf.pad(purple[..., None], [[0, 0], [4, 4], [4, 4], [0, 0]]), 9, 1, "VALID"
        )
        flat = tf.reshape(blurred, [b, -1])
        width = tf.shape(purple)[2]
        idx = tf.argmax(flat, axis=1, output_type=tf.int32)
        py = tf.cast(idx // width, tf.float32)[:, None, None]
        px = tf.cast(idx % width, tf.float32)[:, None, None]
        # 2) the centre of purple mass within a crop's reach of it: a flat-topped peak
        #    has many argmaxes, and taking the first would shift every crop up and left
        grid_y = tf.cast(tf.range(tf.shape(purple)[1]), tf.float32)[None, :, None]
        grid_x = tf.cast(tf.range(width), tf.float32)[None, None, :]
        reach = half / 4.0
        near = tf.logical_and(tf.abs(grid_y - py) <= reach, tf.abs(grid_x - px) <= reach)
        mass = purple * tf.cast(near, tf.float32)
        total = tf.reduce_sum(mass, axis=[1, 2])
        found = total > 0.0
        safe = tf.maximum(total, 1e-6)
        my = tf.reduce_sum(mass * grid_y, axis=[1, 2]) / safe
        mx = tf.reduce_sum(mass * grid_x, axis=[1, 2]) / safe
        cy = tf.where(found, my * 4.0 + 1.5, (hf - 1.0) / 2.0)
        cx = tf.where(found, mx * 4.0 + 1.5, (wf - 1.0) / 2.0)
        boxes = tf.stack(
            [(cy - half) / (hf - 1.0), (cx - half) / (wf - 1.0),
             (cy + half) / (hf - 1.0), (cx + half) / (wf - 1.0)],
            axis=1,
        )
        return tf.image.crop_and_resize(
            x, boxes, tf.range(b), (self.size, self.size), extrapolation_value=0.0
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "window": self.window}


def _missing_weights_error(spec: BackboneSpec, exc: BaseException) -> LeukoError:
    text = str(exc)
    m = re.search(r"(https?://\S+?\.h5)", text)
    url = m.group(1) if m else "the keras-applications storage"
    fname = url.rsplit("/", 1)[-1] if m else f"the {spec.name} ImageNet weights file"
    return LeukoError(
        f"ImageNet weights for {spec.name} are not available offline: Keras could not fetch "
        f"{fname} from {url}; download it on a connected machine and put it in "
        f"{KERAS_CACHE}, or pass --weights PATH to a local backbone weights file "
        f"(or --weights none to train from scratch)"
    )


def build_backbone(
    spec: BackboneSpec, img_size: tuple[int, int], weights: str | None,
    bn_momentum: float = 0.5,
) -> keras.Model:
    """The headless backbone named `backbone`, loaded with `weights` (imagenet/None/path)."""
    check_input_size(spec, img_size)
    shape = (img_size[0], img_size[1], 3)
    if spec.builder is None:
        base = _compact_backbone(img_size, bn_momentum)
        if weights is not None and weights != "imagenet":
            load_backbone_weights(base, Path(weights), label=spec.name)
        return base
    if weights == "imagenet":
        try:
            base = spec.builder(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as exc:  # get_file raises a bare Exception on URL failure
            if "fetch failure" in str(exc) or isinstance(exc, OSError):
                raise _missing_weights_error(spec, exc) from None
            raise
    else:
        base = spec.builder(include_top=False, weights=None, input_shape=shape)
        if weights is not None:
            load_backbone_weights(base, Path(weights), label=spec.name)
    base.name = BACKBONE_LAYER
    return base


def load_backbone_weights(backbone: keras.Model, path: Path, label: str | None = None) -> None:
    """Load a local weights file into the backbone; LeukoError when it is not one or misfits."""
    import warnings

    import numpy as np

    label = label or backbone.name

    before = [np.array(w) for w in backbone.get_weights()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns once per skipped layer
            backbone.load_weights(str(path))
    except Exception as exc:  # h5py OSError, ValueError on shape/layer mismatch, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise LeukoError(
            f"--weights {path}: cannot load into the {label} backbone ({first}); expected weights "
            f"saved from a {label} backbone (keras.applications, without its top)"
        ) from None
    after = backbone.get_weights()
    if before and all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
        raise LeukoError(
            f"--weights {path}: no weights in it matched the {label} backbone; expected weights "
            f"saved from a {label} backbone (keras.applications, without its top)"
        )


def build_model(
    backbone: str,
    img_size: tuple[int, int],
    n_classes: int,
    weights: str | None = None,
    dropout: float = 0.5,
    head_filters: int = 256,
    crop_cell: int = 0,
    crop_window: float = 0.6,
    bn_momentum: float = 0.5,
) -> keras.Model:
    """Raw-pixel input -> backbone preprocessing -> backbone -> the paper's head (figure 2).

    Head: Conv2D -> BatchNormalization -> MaxPooling -> Dropout -> Flatten -> Dense(softmax).
    The softmax is float32 even under a mixed-precision policy. With `crop_cell` = S > 0 a
    CellCrop layer first cuts an SxS square around the stained cell, and the backbone
    sees that.
    """
    spec = get_backbone_spec(backbone)
    if n_classes < 2:
        raise LeukoError(f"need at least 2 classes to train a classifier (got {n_classes})")
    inner = (crop_cell, crop_cell) if crop_cell > 0 else img_size
    base = build_backbone(spec, inner, weights, bn_momentum)
    inputs = keras.Input((img_size[0], img_size[1], 3), name="image", dtype="float32")
    x = inputs
    if crop_cell > 0:
        x = CellCrop(crop_cell, crop_window, name="cell_crop")(x)
    for layer in _preprocessing_layers(spec):
        x = layer(x)
    x = base(x)
    x = keras.layers.Conv2D(head_filters, 3, padding="same", activation="relu", name="head_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="head_bn")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(n_classes, name="logits", dtype="float32")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"leuko_{spec.name}")


def get_backbone(model: keras.Model) -> keras.Model:
    """The nested backbone model inside a model made by build_model."""
    layer = model.get_layer(BACKBONE_LAYER)
    assert isinstance(layer, keras.Model)
    return layer


def set_backbone_trainable(model: keras.Model, trainable: bool, unfreeze: int = 0) -> None:
    """Freeze/unfreeze the backbone; with unfreeze=N only its top N layers train.

    BatchNormalization layers inside a partially unfrozen backbone stay frozen, as Keras's
    fine-tuning guide advises, so small batches do not wreck pretrained statistics.
    """
    base = get_backbone(model)
    if not trainable:
        base.trainable = False
        return
    base.trainable = True
    if unfreeze and unfreeze > 0:
        layers = base.layers
        cut = max(0, len(layers) - unfreeze)
        for i, layer in enumerate(layers):
            layer.trainable = i >= cut and not isinstance(
                layer, keras.layers.BatchNormalization
            )
