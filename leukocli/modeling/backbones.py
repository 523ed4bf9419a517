"""The backbones leuko builds and the checks on them, without TensorFlow.

Option checks (`--backbone`, `--img` against a backbone's minimum size, `--weights`)
run before TensorFlow is imported, so a typo costs a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.files import read_json_object
from ..errors import LeukoError, ParameterError, cmd, opt
from .shipped import WEIGHTS_DIR, shipped_model, shipped_models, shipped_weights

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
        raise ParameterError(
            "img_size", f"{opt('img_size', f'{h}x{w}')} is too small for {spec.name}: its "
            f"minimum input is {spec.min_size}x{spec.min_size}"
        )


RUN_PREFIX = "run:"  # resolved --weights naming a leuko run: "run:/abs/run/dir"
def source_meta(weights: str) -> dict[str, Any]:
    """The leuko.json (or shipped card) of what a --weights value names; {} for none."""
    text = (weights or "").strip()
    if text.lower() in ("", "auto", "imagenet", "none", "scratch", "random"):
        return {}
    run = shipped_model(text)
    if run is None:
        if text.lower() in shipped_weights():
            return shipped_weights()[text.lower()]
        path = Path(text).expanduser()
        if not text or not path.exists():
            return {}
        if path.is_file() and path.suffix.lower() == ".keras":
            path = path.parent
        elif not (path.is_dir() or path.name == "latest"):
            return {}
        from .bundle import resolve_run_dir

        run = resolve_run_dir(path)
        if run.is_file():
            run = run.parent
    try:  # unreadable: not a source to learn from here; resolve_weights says why, once
        return read_json_object(run / "leuko.json", "run metadata")
    except LeukoError:
        return {}


def source_backbone(weights: str) -> str | None:
    """The backbone of the run or shipped model a --weights value names (None: not one)."""
    return str(source_meta(weights).get("backbone") or "") or None


def weights_source(weights: str | None) -> dict[str, Any]:
    """What a resolved --weights brings besides the backbone: backbone name, crop settings.

    Empty for ImageNet, none and plain weights files; a run's or a shipped backbone's
    leuko.json-style card otherwise.
    """
    if not weights or weights == "imagenet":
        return {}
    if weights.startswith(RUN_PREFIX):
        return read_json_object(Path(weights[len(RUN_PREFIX):]) / "leuko.json", "run metadata")
    card = Path(weights).with_name(Path(weights).name.split(".")[0] + ".json")
    if card.parent == WEIGHTS_DIR and card.is_file():
        return read_json_object(card, "weights card")
    return {}


def _shipped(spec: BackboneSpec, name: str) -> str:
    ships = shipped_weights()
    info = ships[name]
    if info.get("backbone") != spec.name:
        raise ParameterError(
            "weights", f"{opt('weights', name)} is a {info.get('backbone')} backbone; use "
            f"{opt('backbone', info.get('backbone'))} with it")
    return str(WEIGHTS_DIR / str(info["file"]))


def _run_source(spec: BackboneSpec, text: str, path: Path) -> str:
    from .bundle import META_FILE, resolve_run_dir

    run = resolve_run_dir(path)
    if run.is_file():
        run = run.parent
    meta_path = run / META_FILE
    if not meta_path.is_file():
        raise ParameterError("weights", f"{opt('weights', text)}: {run} is not a leuko run (no "
                                        f"{META_FILE})")
    meta = read_json_object(meta_path, "run metadata")
    if "members" in meta:
        raise ParameterError("weights", f"{opt('weights', text)} is an ensemble of cv folds; use "
                                        f"one fold ({run}/fold-0, ...) or a {cmd('train')} run")
    if meta.get("backbone") != spec.name:
        raise ParameterError("weights", f"{opt('weights', text)} was trained with "
                                        f"{opt('backbone', meta.get('backbone'))}; use "
                                        f"{opt('backbone', meta.get('backbone'))} to start from it")
    return RUN_PREFIX + str(run.resolve())


def resolve_weights(spec: BackboneSpec, weights: str) -> str | None:
    """Turn --weights into 'imagenet', None (from scratch), a weights file or 'run:DIR'.

    'auto' means ImageNet weights when the backbone has them, none for `compact`. A
    name of leuko's shipped backbones (e.g. pbc) is a file inside the package; a run
    directory (or runs/latest, or its model.keras) is an earlier leuko run whose
    backbone (and cell crop) a new run starts from, whatever its classes.
    """
    text = (weights or "auto").strip()
    low = text.lower()
    if low == "auto":
        return "imagenet" if spec.has_imagenet else None
    if low in ("none", "scratch", "random"):
        return None
    if low == "imagenet":
        if not spec.has_imagenet:
            raise ParameterError("weights", f"{spec.name} has no ImageNet weights; use "
                                            f"{opt('weights', 'none')}" + _shipped_hint(spec))
        return "imagenet"
    if low in shipped_weights():
        return _shipped(spec, low)
    path = Path(text).expanduser()
    shipped = None if path.exists() else shipped_model(low)
    if shipped is not None:
        return _run_source(spec, text, shipped)
    if not path.exists():
        names = ", ".join([*shipped_weights(), *shipped_models()]) or "none shipped"
        raise ParameterError(
            "weights", f"{opt('weights', text)}: no such file or run (use imagenet, none, a "
            f"shipped name ({names}), a leuko run directory, or a .h5/.weights.h5 file)"
        )
    if path.is_dir() or path.suffix.lower() == ".keras" or path.name == "latest":
        return _run_source(spec, text, path)
    if not path.name.lower().endswith((".h5", ".hdf5")):
        raise ParameterError("weights", f"{opt('weights', text)}: expected a Keras weights file "
                                        "(.h5 or .weights.h5) or a leuko run directory")
    return str(path.resolve())


def _shipped_hint(spec: BackboneSpec) -> str:
    names = [n for n, info in shipped_weights().items() if info.get("backbone") == spec.name]
    return f" or leuko's own {opt('weights', names[0])}" if names else ""
