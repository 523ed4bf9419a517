"""Running exported models without TensorFlow: ONNX Runtime and the LiteRT interpreter.

`leuko predict` and `leuko evaluate` take an exported `.onnx` or `.tflite` (or a
SavedModel folder, which does need TensorFlow) as --model. For the first two nothing
here imports TensorFlow: images are decoded and resized with Pillow, and test-time
views are the same flips, turns and shifts as modeling.augment's, done in numpy.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import open_rgb
from ..errors import LeukoError, first_line
from .augment import TTA_VIEWS, check_tta

EXTRAS = {"onnx": ("onnxruntime", "leukocli[onnx]"), "litert": ("ai_edge_litert",
                                                                 "leukocli[litert]")}


def exported_kind(path: Path) -> str | None:
    """'onnx', 'litert' or 'savedmodel' for an exported artefact, else None."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".tflite", ".litert"):
        return "litert"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    return None


def read_card(path: Path) -> dict[str, Any]:
    """The JSON card `leuko export` writes beside (or inside) an artefact."""
    card = path / "leuko.json" if path.is_dir() else path.with_name(path.name + ".leuko.json")
    if not card.is_file():
        raise LeukoError(f"{path} has no {card.name} beside it: leuko needs the classes and "
                         "input size it was exported with (run `leuko export` again)")
    try:
        meta = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LeukoError(f"{card} is not a readable leuko card ({exc})".splitlines()[0]) from None
    if not isinstance(meta, dict) or not meta.get("classes") or not meta.get("img_size"):
        raise LeukoError(f"{card} lacks classes or img_size; it is not a leuko export card")
    return meta


def check_shapes(path: Path, inputs: Sequence[Any], output: Sequence[Any],
                 img_size: tuple[int, int], n_classes: int) -> None:
    """Refuse an artefact whose input is not (batch, h, w, 3) at the card's size or whose
    output is not one probability per class of the card: checked once, when loading,
    instead of failing inside the runtime on the first batch."""
    want = [img_size[0], img_size[1], 3]
    dims = [d if isinstance(d, int) and d > 0 else None for d in inputs]
    if len(dims) != 4 or dims[1:] != want:
        raise LeukoError(f"{path} takes input {_dims(inputs)}, but its card says "
                         f"{img_size[0]}x{img_size[1]} RGB images; it is not this leuko export")
    if len(output) != 2 or output[-1] != n_classes:
        raise LeukoError(f"{path} outputs {_dims(output)}, but its card lists {n_classes} "
                         "classes; it is not this leuko export")


def _dims(shape: Sequence[Any]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)


class OnnxModel:
    """An ONNX model behind the one call predict needs."""

    def __init__(self, path: Path, img_size: tuple[int, int], n_classes: int) -> None:
        ort = _import("onnx", path)
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own zoo
            raise LeukoError(f"{path} is not a loadable ONNX model ({first_line(exc)})") from None
        first = self.session.get_inputs()[0]
        check_shapes(path, first.shape, self.session.get_outputs()[0].shape, img_size,
                     n_classes)
        self.input = first.name

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})
        return np.asarray(out[0], dtype=np.float32)


class LiteRTModel:
    """A LiteRT (TensorFlow Lite) model behind the one call predict needs."""

    def __init__(self, path: Path, img_size: tuple[int, int], n_classes: int) -> None:
        litert = _import("litert", path)
        try:
            self.interpreter = litert.Interpreter(model_path=str(path))
        except Exception as exc:  # noqa: BLE001
            raise LeukoError(f"{path} is not a loadable LiteRT model ({first_line(exc)})") from None
        first = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        check_shapes(path, [int(d) for d in first["shape"]], [int(d) for d in out["shape"]],
                     img_size, n_classes)
        self.input, self.output = first["index"], out["index"]
        self.batch = -1

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(x.shape))
            self.interpreter.allocate_tensors()
            self.batch = x.shape[0]
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output), dtype=np.float32)


class SavedModelModel:
    """A SavedModel's serving function (this one needs TensorFlow)."""

    def __init__(self, path: Path, img_size: tuple[int, int], n_classes: int) -> None:
        from .._tf import tf

        try:
            self.loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise LeukoError(f"{path} is not a loadable SavedModel ({first_line(exc)})") from None
        if not hasattr(self.loaded, "serve") or not self.loaded.serve.concrete_functions:
            raise LeukoError(f"{path} has no `serve` endpoint; export it with leuko export")
        fn = self.loaded.serve.concrete_functions[0]
        spec = fn.structured_input_signature[0][0]
        check_shapes(path, [d if d is not None else -1 for d in spec.shape.as_list()],
                     [d if d is not None else -1 for d in fn.structured_outputs.shape.as_list()]
                     if hasattr(fn.structured_outputs, "shape") else [-1, n_classes],
                     img_size, n_classes)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        out = self.loaded.serve(np.ascontiguousarray(x, np.float32))
        return np.asarray(out, dtype=np.float32)


def load_runtime(path: Path, kind: str, img_size: tuple[int, int], n_classes: int) -> Any:
    """The artefact's runtime, its input and output shapes checked against its card."""
    runtime = {"onnx": OnnxModel, "litert": LiteRTModel, "savedmodel": SavedModelModel}[kind]
    return runtime(path, img_size, n_classes)


def require_extra(modules: Sequence[str], extra: str, purpose: str) -> list[Any]:
    """Import an optional extra's modules, or stop with one line naming what to install."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError:
        names = " and ".join(dict.fromkeys(m.split(".")[0] for m in modules))
        raise LeukoError(f"{purpose} needs {names}: pip install '{extra}'") from None


def _import(kind: str, path: Path) -> Any:
    module, extra = EXTRAS[kind]
    names = [module, f"{module}.interpreter"] if kind == "litert" else [module]
    return require_extra(names, extra, f"running {path.name}")[-1]


# --------------------------------------------------------------------------- images
def load_images(paths: Sequence[Path | str], size: tuple[int, int]) -> np.ndarray:
    """float32 RGB 0-255 batches fitted into `size` with Pillow, as modeling.loader does:
    aspect kept (antialiased bilinear), black bars where the shapes differ."""
    from PIL import Image

    h, w = size
    out = np.zeros((len(paths), h, w, 3), dtype=np.float32)
    for i, p in enumerate(paths):
        rgb = open_rgb(p)
        if rgb.size == (w, h):
            out[i] = np.asarray(rgb, dtype=np.float32)
            continue
        ratio = max(rgb.width / w, rgb.height / h)
        rw, rh = int(rgb.width / ratio), int(rgb.height / ratio)
        top, left = (h - rh) // 2, (w - rw) // 2
        small = rgb.resize((rw, rh), Image.Resampling.BILINEAR)
        out[i, top : top + rh, left : left + rw] = np.asarray(small, dtype=np.float32)
    return out


def tta_views_np(images: np.ndarray, n: int) -> list[np.ndarray]:
    """The first `n` test-time views of a batch, in numpy (see modeling.augment.TTA_VIEWS)."""
    check_tta(n)
    views = [images]
    for angle, fh, fv, dy, dx in TTA_VIEWS[1:n]:
        if angle == 0.0 and dy == 0.0 and dx == 0.0:
            v = images[:, :, ::-1] if fh else images
            views.append(np.ascontiguousarray(v[:, ::-1] if fv else v))
            continue
        views.append(_warp(images, angle, fh, fv, dy, dx))
    return views


def _reflect(coord: np.ndarray, n: int) -> np.ndarray:
    """TensorFlow's REFLECT fill (d c b a | a b c d | d c b a) for out-of-image coordinates."""
    period = 2 * n
    c = np.mod(coord + 0.5, period) - 0.5
    return np.where(c > n - 1, period - 1 - c, c).clip(0, n - 1)


def _warp(images: np.ndarray, angle: float, fh: bool, fv: bool, dy: float,
          dx: float) -> np.ndarray:
    """One fixed rotation/flip/shift about the centre, bilinear, reflected edges."""
    b, h, w, _ = images.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    fx, fy = (-1.0 if fh else 1.0), (-1.0 if fv else 1.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x_in = c * fx * (xs - cx) - s * fy * (ys - cy) + cx + dx * w
    y_in = s * fx * (xs - cx) + c * fy * (ys - cy) + cy + dy * h
    x_in, y_in = _reflect(x_in, w), _reflect(y_in, h)
    x0, y0 = np.floor(x_in).astype(int), np.floor(y_in).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = (x_in - x0)[..., None], (y_in - y0)[..., None]
    top = images[:, y0, x0] * (1 - wx) + images[:, y0, x1] * wx
    bottom = images[:, y1, x0] * (1 - wx) + images[:, y1, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
