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
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import open_rgb
from ..errors import LeukoError, cmd, first_line
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
                         f"input size it was exported with (run `{cmd('export')}` again)")
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
            with quiet_native_log():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
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


_XNNPACK_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


@contextmanager
def quiet_native_log() -> Iterator[None]:
    """Hold back LiteRT's one start-up notice ("INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU.", written by its C++ to file descriptor 2 once a process): it would
    stand among leuko's lines and in a library caller's stderr. Whatever else reaches
    descriptor 2 meanwhile is passed on as it was (all of it with LEUKO_TF_VERBOSE=1)."""
    if os.environ.get("LEUKO_TF_VERBOSE"):
        yield
        return
    from .._util.stderr import Held, holding_fd2

    held = Held()
    try:
        with holding_fd2() as held:
            yield
    finally:
        rest = held.data.replace(_XNNPACK_NOTICE, b"")
        if rest:
            sys.stderr.flush()
            os.write(2, rest)


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
    """float32 RGB 0-255 batches fitted into `size`, the pixels modeling.loader gives:
    Pillow decodes (as TensorFlow's accurate JPEG decoder does), and the aspect-keeping
    antialiased bilinear resize with black bars is tf.image.resize_with_pad's, in numpy."""
    out = np.zeros((len(paths), size[0], size[1], 3), dtype=np.float32)
    if len(paths) < 2:
        for i, p in enumerate(paths):
            _fit_into(out[i], p)
        return out
    from concurrent.futures import ThreadPoolExecutor

    from .._util.parallel import workers

    # Pillow's decoder and numpy's arithmetic let go of the GIL: images decode side by side
    with ThreadPoolExecutor(min(workers(), len(paths))) as pool:
        list(pool.map(_fit_into, out, paths))
    return out


def _fit_into(frame: np.ndarray, path: Path | str) -> None:
    """Decode one image into `frame` (h, w, 3): as it is, or fitted with black bars."""
    h, w = frame.shape[:2]
    rgb = np.asarray(open_rgb(path), dtype=np.float32)
    if rgb.shape[:2] == (h, w):
        frame[:] = rgb
        return
    (rh, rw), (top, left) = _pad_geometry(rgb.shape[0], rgb.shape[1], h, w)
    frame[top : top + rh, left : left + rw] = _resize_axis(_resize_axis(rgb, rw, axis=1),
                                                           rh, axis=0)


def _pad_geometry(height: int, width: int, th: int, tw: int
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """resize_with_pad's (resized size, top-left offset), in its float32 arithmetic."""
    f32 = np.float32
    ratio = max(f32(width) / f32(tw), f32(height) / f32(th))
    rh_f, rw_f = f32(height) / ratio, f32(width) / ratio
    top = max(0, int(np.floor((f32(th) - rh_f) / f32(2))))
    left = max(0, int(np.floor((f32(tw) - rw_f) / f32(2))))
    return (int(np.floor(rh_f)), int(np.floor(rw_f))), (top, left)


def _resize_axis(image: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """One axis of TensorFlow's antialiased bilinear resize (ScaleAndTranslate, triangle):
    each output a weighted sum over its short span of inputs, as TensorFlow gathers them
    (a dense matrix product would be no closer, and BLAS threads make it slower)."""
    n_in = image.shape[axis]
    starts, weights = _triangle_spans(n_in, n_out)
    shape = [1] * image.ndim
    shape[axis] = n_out
    out = np.zeros([n_out if i == axis else d for i, d in enumerate(image.shape)], np.float32)
    for k in range(weights.shape[1]):
        picked = np.take(image, np.minimum(starts + k, n_in - 1), axis=axis)  # past a
        out += weights[:, k].reshape(shape) * picked  # span's end the weight is 0
    return out


def _triangle_spans(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(first input of each output, (n_out, span) weights) as TensorFlow's ComputeSpans
    makes them, in float32: half-pixel centres, the kernel widened by the scale when
    shrinking, each output's weights summing to 1."""
    f32 = np.float32
    inv_scale = f32(1.0) / (f32(n_out) / f32(n_in))
    kernel_scale = max(inv_scale, f32(1.0))
    span = min(2 * math.ceil(kernel_scale) + 1, n_in)
    sample = (np.arange(n_out, dtype=f32) + f32(0.5)) * inv_scale
    start = np.clip(np.ceil(sample - kernel_scale - f32(0.5)), 0, n_in - 1).astype(int)
    end = np.clip(np.floor(sample + kernel_scale - f32(0.5)), 0, n_in - 1).astype(int) + 1
    source = (start[:, None] + np.arange(span)[None, :]).astype(f32)
    pos = np.abs((source + f32(0.5) - sample[:, None]) * (f32(1.0) / kernel_scale))
    weights = np.maximum(f32(0.0), f32(1.0) - pos).astype(f32)
    weights[np.arange(span)[None, :] >= (end - start)[:, None]] = 0.0
    total = weights.sum(axis=1, keepdims=True, dtype=f32)
    return start, np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


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
