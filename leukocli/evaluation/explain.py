"""Grad-CAM: where in the image the model looked to give its answer.

For a class c, the gradients of c's logit with respect to the backbone's last feature
maps weight those maps (Selvaraju et al., 2017); their positive sum is the heatmap. It
works for every backbone leuko builds (they are all one nested `backbone` model), and
through the cell crop: the map is computed on the crop and put back on the whole image
where the crop came from. An ensemble's map is the mean of its members' maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._util.files import atomic_write, own_or_free, png_metadata
from ..errors import LeukoError, ParameterError, opt
from ..modeling.bundle import Bundle


@dataclass
class Explanation:
    """Heatmaps (n, h, w) in [0, 1] at the model's input size, for class `explained`."""

    maps: np.ndarray
    probs: np.ndarray
    explained: list[int]


def _members(model: Any) -> list[Any]:
    """The leuko models inside: the members of an ensemble, or the model itself."""
    nested = [layer for layer in model.layers if layer.name.startswith("member_")]
    return nested or [model]


def _split_backbone(backbone: Any) -> tuple[Any, Any]:
    """(backbone up to its last feature maps, what follows them) as two callables.

    The maps are the backbone's output, or, when the backbone ends in a pooling layer
    (leuko's compact CNN), the activations just before it: twice the resolution.
    """
    from .._tf import keras

    last = backbone.layers[-1]
    if not isinstance(last, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
        return backbone, (lambda t: t)
    inner = keras.Model(backbone.inputs, last.input)
    return inner, (lambda t: last(t))


def _forward(model: Any, x: Any, tape: Any) -> tuple[Any, Any]:
    """(last feature maps of the backbone, logits), walking the model's chain of layers."""
    feats = None
    h = x
    for layer in model.layers[1:]:
        if layer.name == "probs":
            break
        if layer.name == "backbone":
            inner, rest = _split_backbone(layer)
            feats = inner(h, training=False)
            tape.watch(feats)
            h = rest(feats)
            continue
        h = layer(h, training=False)
    if feats is None:
        raise LeukoError("this model has no `backbone` layer: Grad-CAM needs a leuko model")
    return feats, h


def _cam(model: Any, x: Any, classes: Sequence[int] | None) -> tuple[np.ndarray, list[int]]:
    from .._tf import tf

    with tf.GradientTape() as tape:
        feats, logits = _forward(model, x, tape)
        logits = tf.cast(logits, tf.float32)
        chosen = list(classes) if classes is not None else [
            int(i) for i in tf.argmax(logits, axis=1).numpy()]
        score = tf.reduce_sum(logits * tf.one_hot(chosen, logits.shape[-1]), axis=1)
    grads = tf.cast(tape.gradient(score, feats), tf.float32)
    feats = tf.cast(feats, tf.float32)
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1)).numpy()
    # min-max per map, as Grad-CAM is shown: the floor every location shares says nothing
    low = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (cam - low) / np.maximum(span, 1e-12), 0.0), chosen


def _place(model: Any, x: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Feature-grid maps (n, fh, fw) onto the input (n, h, w), through the crop if any."""
    n, h, w = x.shape[0], x.shape[1], x.shape[2]
    names = [layer.name for layer in model.layers]
    if "cell_crop" in names:
        cy, cx, side = (np.asarray(t) for t in model.get_layer("cell_crop").locate(x))
    else:
        cy, cx = np.full(n, (h - 1) / 2.0), np.full(n, (w - 1) / 2.0)
        side = None
    out = np.zeros((n, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    fh, fw = cam.shape[1], cam.shape[2]
    for i in range(n):
        if side is None:
            u, v = (ys + 0.5) / h * fh - 0.5, (xs + 0.5) / w * fw - 0.5
        else:
            top, left = cy[i] - side[i] / 2.0, cx[i] - side[i] / 2.0
            u = (ys + 0.5 - top) / side[i] * fh - 0.5
            v = (xs + 0.5 - left) / side[i] * fw - 0.5
        out[i] = _bilinear(cam[i], u, v)
    return out


def _bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample a small grid at fractional (u, v); zero beyond half a cell outside it."""
    fh, fw = grid.shape
    inside = (u > -0.5) & (u < fh - 0.5) & (v > -0.5) & (v < fw - 0.5)
    uc, vc = np.clip(u, 0, fh - 1), np.clip(v, 0, fw - 1)
    u0, v0 = np.floor(uc).astype(int), np.floor(vc).astype(int)
    u1, v1 = np.minimum(u0 + 1, fh - 1), np.minimum(v0 + 1, fw - 1)
    du, dv = uc - u0, vc - v0
    top = grid[u0, v0] * (1 - dv) + grid[u0, v1] * dv
    bottom = grid[u1, v0] * (1 - dv) + grid[u1, v1] * dv
    return np.where(inside, top * (1 - du) + bottom * du, 0.0).astype(np.float32)


def require_gradients(bundle: Bundle) -> None:
    """Exported artefacts carry no gradients: say so before any work is done."""
    if bundle.runtime != "keras":
        raise LeukoError("Grad-CAM needs the Keras model (gradients); use the run, not an "
                         f"exported {bundle.runtime} artefact")


def explain(bundle: Bundle, images: np.ndarray, classes: Sequence[int] | None = None
            ) -> Explanation:
    """Grad-CAM maps for a batch of model-sized images (float32 RGB 0-255)."""
    from .._tf import tf

    require_gradients(bundle)
    x = np.asarray(images, np.float32)
    probs = np.asarray(bundle.model.predict_on_batch(x), np.float32)
    chosen = list(classes) if classes is not None else [int(i) for i in probs.argmax(1)]
    maps = []
    for member in _members(bundle.model):
        cam, _ = _cam(member, tf.constant(x), chosen)
        maps.append(_place(member, x, cam))
    mean = np.mean(maps, axis=0)
    peak = mean.reshape(len(x), -1).max(axis=1)[:, None, None]
    return Explanation(np.where(peak > 0, mean / np.maximum(peak, 1e-12), 0.0), probs, chosen)


def overlay(image: np.ndarray, heat: np.ndarray, path: Path, title: str) -> None:
    """The image and the image under its heatmap, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = heat.shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * w / 80 + 0.4, h / 80 + 0.6), dpi=100)
    try:
        rgb = np.clip(image, 0, 255).astype(np.uint8)
        axes[0].imshow(rgb)
        axes[1].imshow(rgb)
        axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        for ax in axes:
            ax.set_axis_off()
        fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata=png_metadata()))
    finally:
        plt.close(fig)


def explain_files(bundle: Bundle, paths: Sequence[Path], out: Path, class_name: str | None,
                  batch: int = 16, reporter: Any = None) -> list[dict[str, Any]]:
    """Grad-CAM PNGs for image files into `out`; one row per image for a table or JSON."""
    from .._util.progress import SILENT
    from ..modeling.runtimes import load_images

    reporter = reporter or SILENT
    target = None
    if class_name is not None:
        if class_name not in bundle.classes:
            raise ParameterError("class_name",
                                 f"{opt('class_name')} {class_name!r} is not a class of the model "
                             f"({', '.join(bundle.classes)})")
        target = bundle.classes.index(class_name)
    rows: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    with reporter.task("explaining", len(paths)) as advance:
        for a in range(0, len(paths), batch):
            part = list(paths[a : a + batch])
            x = load_images(part, bundle.img_size)
            ex = explain(bundle, x, None if target is None else [target] * len(part))
            for i, p in enumerate(part):
                rows.append(_write_one(bundle, p, x[i], ex, i, out, a + i))
            advance(len(part))
    return rows


def _write_one(bundle: Bundle, path: Path, image: np.ndarray, ex: Explanation, i: int,
               out: Path, n: int) -> dict[str, Any]:
    predicted = int(ex.probs[i].argmax())
    explained = bundle.classes[ex.explained[i]]
    png = own_or_free(out / f"{n:04d}-{Path(path).stem}-gradcam.png")
    overlay(image, ex.maps[i], png,
            f"{Path(path).name}: {bundle.classes[predicted]} {ex.probs[i, predicted]:.3f}; "
            f"map for {explained}")
    peak = np.unravel_index(int(ex.maps[i].argmax()), ex.maps[i].shape)
    return {"path": str(path), "predicted": bundle.classes[predicted],
            "probability": round(float(ex.probs[i, predicted]), 6), "explained": explained,
            "gradcam": str(png), "peak_yx": [int(peak[0]), int(peak[1])]}
