"""Building models: backbone preprocessing, backbone, the paper's head; weights loading.

The model takes raw 0-255 float32 RGB of shape (None, h, w, 3): each backbone's own
input scaling is a built-in Keras layer inside the model, so a saved `model.keras`
loads with plain `keras.models.load_model` and predict needs no preprocessing flags.
"""

from __future__ import annotations

import re
from pathlib import Path

from .._tf import keras
from ..errors import LeukoError, ParameterError, first_line, opt
from .backbones import (
    BACKBONE_LAYER,
    KERAS_CACHE,
    RUN_PREFIX,
    BackboneSpec,
    check_input_size,
    get_backbone_spec,
    shipped_weights,
)
from .layers import BALANCE_TARGET, CellCrop, ColorBalance, StainNorm

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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


NORMS = ("batch", "group")


def _norm_layer(norm: str, momentum: float, name: str) -> keras.layers.Layer:
    """BatchNormalization, or GroupNormalization, which keeps no running statistics: each
    image is normalised by its own, so a microscope whose features sit elsewhere than the
    training data's is not pushed off by statistics learned there."""
    if norm == "group":
        return keras.layers.GroupNormalization(groups=8, name=name.replace("_bn", "_gn"))
    return keras.layers.BatchNormalization(momentum=momentum, name=name)


def _compact_backbone(img_size: tuple[int, int], bn_momentum: float = 0.5,
                      norm: str = "batch") -> keras.Model:
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
        x = _norm_layer(norm, bn_momentum, f"c{i}_bn")(x)
        x = keras.layers.ReLU(name=f"c{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"c{i}_pool")(x)
    return keras.Model(inputs, x, name=BACKBONE_LAYER)


def _missing_weights_error(spec: BackboneSpec, exc: BaseException) -> LeukoError:
    text = str(exc)
    m = re.search(r"(https?://\S+?\.h5)", text)
    url = m.group(1) if m else "the keras-applications storage"
    fname = url.rsplit("/", 1)[-1] if m else f"the {spec.name} ImageNet weights file"
    ours = list(shipped_weights())
    alternative = (
        f", or train offline from leuko's own pretrained backbone: "
        f"{opt('backbone', 'compact')} {opt('weights', ours[0])}" if ours else ""
    )
    return ParameterError(
        "weights",
        f"ImageNet weights for {spec.name} are not available offline: Keras could not fetch "
        f"{fname} from {url}; download it on a connected machine and put it in "
        f"{KERAS_CACHE}, or pass {opt('weights', 'PATH')} to a local backbone weights file"
        f"{alternative} (or {opt('weights', 'none')} to train from scratch)"
    )


def build_backbone(
    spec: BackboneSpec, img_size: tuple[int, int], weights: str | None,
    bn_momentum: float = 0.5, norm: str = "batch",
) -> keras.Model:
    """The headless backbone named `backbone`, loaded with `weights` (imagenet/None/path)."""
    check_input_size(spec, img_size)
    shape = (img_size[0], img_size[1], 3)
    if spec.builder is None:
        base = _compact_backbone(img_size, bn_momentum, norm)
        if weights is not None and weights != "imagenet":
            _load_into(base, weights, spec.name)
        return base
    builder = getattr(keras.applications, spec.builder)
    if weights == "imagenet":
        try:
            base = builder(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as exc:  # get_file raises a bare Exception on URL failure
            if "fetch failure" in str(exc) or isinstance(exc, OSError):
                raise _missing_weights_error(spec, exc) from None
            raise
    else:
        base = builder(include_top=False, weights=None, input_shape=shape)
        if weights is not None:
            _load_into(base, weights, spec.name)
    base.name = BACKBONE_LAYER
    return base


def _load_into(base: keras.Model, weights: str, label: str) -> None:
    """A weights file, or the backbone of an earlier run ("run:DIR"), into `base`."""
    if not weights.startswith(RUN_PREFIX):
        load_backbone_weights(base, Path(weights), label=label)
        return
    from .bundle import load_bundle

    run = Path(weights[len(RUN_PREFIX):])
    source = get_backbone(load_bundle(run, float32=False).model)
    mine, theirs = base.get_weights(), source.get_weights()
    if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs,
                                                                          strict=True)):
        raise ParameterError("weights", f"{opt('weights', run)}: its {label} backbone has other "
                                        "shapes (another input size for a backbone that fixes "
                                        f"it?); train with its {opt('img_size')}")
    base.set_weights(theirs)


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
        raise ParameterError(
            "weights", f"{opt('weights', path)}: cannot load into the {label} backbone "
            f"({first_line(exc)}); expected weights saved from a {label} backbone "
            "(keras.applications, without its top)"
        ) from None
    after = backbone.get_weights()
    if before and all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
        raise ParameterError(
            "weights", f"{opt('weights', path)}: no weights in it matched the {label} backbone; "
            f"expected weights saved from a {label} backbone (keras.applications, without its top)"
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
    crop_scale: float | None = None,
    crop_jitter: float = 0.0,
    balance: bool = False,
    norm: str = "batch",
    stain_norm: bool = False,
) -> keras.Model:
    """Raw-pixel input -> backbone preprocessing -> backbone -> the paper's head (figure 2).

    Head: Conv2D -> BatchNormalization -> MaxPooling -> Dropout -> Flatten -> Dense(softmax).
    The softmax is float32 even under a mixed-precision policy. With `crop_cell` = S > 0 a
    CellCrop layer first cuts a square around the stained cell (`crop_scale` times its
    diameter, or `crop_window` of the image without a scale) resized to SxS, and the
    backbone sees that. With `balance` a ColorBalance layer first brings the photo's
    background to a neutral grey (and the crop fills beyond the photo with that grey).
    With `stain_norm` a StainNorm layer brings the crop's stain to one strength.
    `norm` "group" builds the compact backbone and the head with GroupNormalization.
    """
    spec = get_backbone_spec(backbone)
    if n_classes < 2:
        raise LeukoError(f"need at least 2 classes to train a classifier (got {n_classes})")
    inner = (crop_cell, crop_cell) if crop_cell > 0 else img_size
    base = build_backbone(spec, inner, weights, bn_momentum, norm)
    inputs = keras.Input((img_size[0], img_size[1], 3), name="image", dtype="float32")
    x = inputs
    if balance:
        x = ColorBalance(name="color_balance")(x)
    if crop_cell > 0:
        x = CellCrop(crop_cell, crop_window, crop_scale, crop_jitter,
                     fill=BALANCE_TARGET if balance else 0.0, name="cell_crop")(x)
    if stain_norm:
        x = StainNorm(name="stain_norm")(x)
    for layer in _preprocessing_layers(spec):
        x = layer(x)
    x = base(x)
    x = keras.layers.Conv2D(head_filters, 3, padding="same", activation="relu", name="head_conv")(x)
    x = _norm_layer(norm, 0.9, "head_bn")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(n_classes, name="logits", dtype="float32")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"leuko_{spec.name}")


HEAD_LAYERS = ("head_conv", "head_bn")


def start_head_from(model: keras.Model, run: Path, classes: list[str]) -> list[str]:
    """Start `model`'s head from the head of the run it starts from: its feature layers
    where their shapes agree, and the output row of every class both know (matched
    without regard to case). Returns the classes matched.

    A few labelled cells of a new microscope cannot train a head from nothing (10 per
    class reached about 50% so): the source's head already separates those classes, and
    adapting it moves it only as far as the new lab's cells need.
    """
    from .bundle import load_bundle

    source = load_bundle(run, float32=False)
    theirs = source.model
    for name in HEAD_LAYERS:
        try:
            mine_layer, their_layer = model.get_layer(name), theirs.get_layer(name)
        except ValueError:
            return []
        a, b = mine_layer.get_weights(), their_layer.get_weights()
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
            return []  # another crop or head size: the head starts fresh
        mine_layer.set_weights(b)
    kernel, bias = model.get_layer("logits").get_weights()
    src_kernel, src_bias = theirs.get_layer("logits").get_weights()
    if src_kernel.shape[0] != kernel.shape[0]:
        return []
    by_lower = {str(c).lower(): i for i, c in enumerate(source.classes)}
    matched = []
    for j, c in enumerate(classes):
        i = by_lower.get(c.lower())
        if i is not None:
            kernel[:, j], bias[j] = src_kernel[:, i], src_bias[i]
            matched.append(c)
    model.get_layer("logits").set_weights([kernel, bias])
    return matched


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
