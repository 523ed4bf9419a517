"""Classifying image files, folders or globs with a saved run.

The model is loaded once and images stream through the same batched tf.data loader as
training, so throughput is close to the model's own forward-pass rate. Results are
plain data (PredictResult) with CSV and JSON writers for scripts; unreadable files
become per-file errors instead of stopping the rest.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util.progress import SILENT, Reporter
from ..data.dataset import find_images
from ..data.images import check_images
from ..errors import LeukoError, check_batch
from ..modeling.augment import check_tta
from ..modeling.bundle import Bundle
from . import INFER_BATCH

FORMATS = ("table", "csv", "json")


def predict_probs(
    bundle: Bundle,
    paths: Sequence[Path | str],
    batch: int = INFER_BATCH,
    description: str = "predicting",
    tta: int = 1,
    reporter: Reporter = SILENT,
) -> np.ndarray:
    """Class probabilities (n, n_classes) for `paths`, in order, with a progress bar.

    With `tta` > 1 each batch is also seen flipped and slightly turned (TTA_VIEWS) and the
    softmax outputs are averaged: errors on this data sit on particular views. Exported
    ONNX and LiteRT models run without TensorFlow (Pillow decodes, numpy turns).
    """
    check_batch(batch)
    check_tta(tta)
    n = len(paths)
    if n == 0:
        return np.zeros((0, bundle.n_classes), dtype=np.float32)
    batches = _tf_batches if bundle.runtime == "keras" else _numpy_batches
    chunks: list[np.ndarray] = []
    with reporter.task(description, n) as advance:
        for x, views in batches(bundle, paths, batch, tta):
            out = np.mean([np.asarray(bundle.model.predict_on_batch(v)) for v in views], axis=0)
            chunks.append(np.asarray(out, dtype=np.float32))
            advance(int(x.shape[0]))
    probs = np.concatenate(chunks, axis=0)
    if probs.shape != (n, bundle.n_classes):
        raise LeukoError(
            f"the model returned shape {probs.shape}, expected ({n}, {bundle.n_classes})"
        )
    return probs


def _tf_batches(bundle: Bundle, paths: Sequence[Path | str], batch: int, tta: int
                ) -> Iterator[tuple[Any, list[Any]]]:
    from .._tf import tf
    from ..modeling.augment import tta_views
    from ..modeling.loader import build_dataset

    ds = build_dataset([str(p) for p in paths], None, bundle.img_size, batch, training=False)
    done = 0
    try:
        for x in ds:
            yield x, (tta_views(x, tta) if tta > 1 else [x])
            done += int(x.shape[0])
    except tf.errors.OpError as exc:
        first = (exc.message or str(exc)).strip().splitlines()[0][:200]
        raise LeukoError(
            f"could not read an image among items {done + 1}-{min(done + batch, len(paths))} "
            f"({first})"
        ) from None


def _numpy_batches(bundle: Bundle, paths: Sequence[Path | str], batch: int, tta: int
                   ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Batches read with Pillow, the next one read while the model runs on this one."""
    from concurrent.futures import ThreadPoolExecutor

    from ..modeling.runtimes import load_images, tta_views_np

    starts = list(range(0, len(paths), batch))
    with ThreadPoolExecutor(1) as ahead:
        pending = ahead.submit(load_images, paths[:batch], bundle.img_size)
        for a in starts:
            try:
                x = pending.result()
            except OSError as exc:
                raise LeukoError(f"could not read an image among items {a + 1}-"
                                 f"{min(a + batch, len(paths))} ({exc})") from None
            if a + batch < len(paths):
                pending = ahead.submit(load_images, paths[a + batch : a + 2 * batch],
                                       bundle.img_size)
            yield x, (tta_views_np(x, tta) if tta > 1 else [x])


@dataclass
class Prediction:
    """One classified image: its path and class probabilities (in the bundle's class order)."""

    path: str
    probs: np.ndarray

    def top(self, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(str(classes[i]), float(self.probs[i])) for i in order]


@dataclass
class PredictResult:
    """What `predict_paths` found: predictions in input order and per-file failures."""

    classes: list[str]
    predictions: list[Prediction]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def collect_images(paths: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs; LeukoError when nothing at all is an image."""
    found, problems = find_images(paths)
    errors = [(p.rel, p.reason) for p in problems]
    if not found:
        detail = "; ".join(f"{path}: {reason}" for path, reason in errors[:3])
        raise LeukoError(f"no images found ({detail})" if detail else "no images found")
    # The same file named twice (e.g. a folder and a glob) is classified once.
    return list(dict.fromkeys(found)), errors


def predict_paths(
    paths: Sequence[str],
    bundle: Bundle,
    batch: int = INFER_BATCH,
    check: bool = True,
    collected: tuple[list[Path], list[tuple[str, str]]] | None = None,
    tta: int = 1,
    reporter: Reporter = SILENT,
) -> PredictResult:
    """Classify the readable images among `paths`; unreadable ones become errors."""
    files, errors = collected if collected is not None else collect_images(paths)
    errors = list(errors)
    reasons = (
        check_images(files, "decode", "checking images", reporter)
        if check else [None] * len(files)
    )
    good = [p for p, r in zip(files, reasons, strict=True) if r is None]
    errors += [(str(p), r) for p, r in zip(files, reasons, strict=True) if r is not None]
    probs = predict_probs(bundle, good, batch, tta=tta, reporter=reporter)
    preds = [Prediction(str(p), probs[i]) for i, p in enumerate(good)]
    return PredictResult(list(bundle.classes), preds, errors)


# --------------------------------------------------------------------------- output
def _csv_header(classes: Sequence[str], k: int) -> list[str]:
    cols = ["path", "predicted", "probability"]
    for i in range(2, k + 1):
        cols += [f"top{i}", f"top{i}_probability"]
    return cols + [f"prob_{c}" for c in classes]


def write_csv(result: PredictResult, k: int, stream: Any) -> None:
    """CSV: path,predicted,probability[,topN,topN_probability...],prob_<CLASS>..."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(_csv_header(result.classes, k))
    for p in result.predictions:
        top = p.top(result.classes, k)
        row: list[object] = [p.path, top[0][0], f"{top[0][1]:.6f}"]
        for label, prob in top[1:]:
            row += [label, f"{prob:.6f}"]
        row += [f"{float(v):.6f}" for v in p.probs]
        writer.writerow(row)


def to_json(result: PredictResult, k: int) -> list[dict[str, Any]]:
    """A list with one object per input: a prediction, or {path, error} for a failure."""
    out: list[dict[str, Any]] = []
    for p in result.predictions:
        top = p.top(result.classes, k)
        out.append(
            {
                "path": p.path,
                "predicted": top[0][0],
                "probability": round(top[0][1], 6),
                "top_k": [{"label": lab, "probability": round(pr, 6)} for lab, pr in top],
                "probabilities": {
                    c: round(float(v), 6) for c, v in zip(result.classes, p.probs, strict=True)
                },
            }
        )
    out += [{"path": path, "error": reason} for path, reason in result.errors]
    return out
