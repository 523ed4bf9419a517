"""The backbones leuko builds and the checks on them, without TensorFlow.

Option checks (`--backbone`, `--img` against a backbone's minimum size, `--weights`)
run before TensorFlow is imported, so a typo costs a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LeukoError

BACKBONE_LAYER = "backbone"
KERAS_CACHE = "~/.keras/models/"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it: constructor, input scaling, minimum size."""

    name: str
    builder: str | None  # a keras.applications class name; None: the from-scratch `compact`
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


BACKBONES: dict[str, BackboneSpec] = {
    "inceptionresnetv2": BackboneSpec("inceptionresnetv2", "InceptionResNetV2", "tf", 75),
    "xception": BackboneSpec("xception", "Xception", "tf", 71),
    "resnet50v2": BackboneSpec("resnet50v2", "ResNet50V2", "tf", 32),
    "inceptionv3": BackboneSpec("inceptionv3", "InceptionV3", "tf", 75),
    "mobilenetv2": BackboneSpec("mobilenetv2", "MobileNetV2", "tf", 32),
    "densenet121": BackboneSpec("densenet121", "DenseNet121", "torch", 32),
    "efficientnetb0": BackboneSpec("efficientnetb0", "EfficientNetB0", "none", 32),
    "compact": BackboneSpec("compact", None, "unit", 32, has_imagenet=False),
}


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
