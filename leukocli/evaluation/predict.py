"""`leuko predict`: classify image files, folders or globs with a saved run.

The model is loaded once and images stream through the same batched tf.data loader as
training, so throughput is close to the model's own forward-pass rate. Output is a Rich
table for people, or clean CSV/JSON on stdout for scripts; unreadable files are reported
on stderr with their reason and make the exit code 1 without stopping the rest.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text

from .bundle import Bundle, load_bundle, resolve_run_dir
from .console import console, err_console, progress_bar
from .dataset import check_images, find_images
from .errors import EXIT_PARTIAL, LeukoError

FORMATS = ("table", "csv", "json")


def check_tta(tta: int) -> None:
    from .loader import MAX_TTA

    if not 1 <= tta <= MAX_TTA:
        raise LeukoError(f"--tta must be between 1 (off) and {MAX_TTA} views (got {tta})")


def predict_probs(
    bundle: Bundle,
    paths: Sequence[Path | str],
    batch: int = 64,
    description: str = "predicting",
    tta: int = 1,
) -> np.ndarray:
    """Class probabilities (n, n_classes) for `paths`, in order, with a progress bar.

    With `tta` > 1 each batch is also seen flipped and slightly turned (loader.tta_views)
    and the softmax outputs are averaged: errors on this data sit on particular views.
    """
    from ._tf import tf
    from .loader import build_dataset, tta_views

    if batch < 1:
        raise LeukoError(f"--batch must be at least 1 (got {batch})")
    check_tta(tta)
    n = len(paths)
    if n == 0:
        return np.zeros((0, bundle.n_classes), dtype=np.float32)
    ds = build_dataset([str(p) for p in paths], None, bundle.img_size, batch, training=False)
    chunks: list[np.ndarray] = []
    done = 0
    with progress_bar(description, n) as bar:
        try:
            for x in ds:
                if isinstance(x, tuple):
                    x = x[0]
                if tta > 1:
                    views = tta_views(x, tta)
                    out = np.mean(
                        [np.asarray(bundle.model.predict_on_batch(v)) for v in views], axis=0
                    )
                else:
                    out = bundle.model.predict_on_batch(x)
                chunks.append(np.asarray(out, dtype=np.float32))
                bar.advance(int(x.shape[0]))
                done += int(x.shape[0])
        except tf.errors.OpError as exc:
            first = (exc.message or str(exc)).strip().splitlines()[0][:200]
            raise LeukoError(
                f"could not read an image among items {done + 1}-{min(done + batch, n)} "
                f"({first})"
            ) from None
    probs = np.concatenate(chunks, axis=0)
    if probs.shape != (n, bundle.n_classes):
        raise LeukoError(
            f"the model returned shape {probs.shape}, expected ({n}, {bundle.n_classes})"
        )
    return probs


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
    batch: int = 64,
    check: bool = True,
    collected: tuple[list[Path], list[tuple[str, str]]] | None = None,
    tta: int = 1,
) -> PredictResult:
    """Classify the readable images among `paths`; unreadable ones become errors."""
    files, errors = collected if collected is not None else collect_images(paths)
    errors = list(errors)
    reasons = check_images(files, "decode", "checking images") if check else [None] * len(files)
    good = [p for p, r in zip(files, reasons, strict=True) if r is None]
    errors += [(str(p), r) for p, r in zip(files, reasons, strict=True) if r is not None]
    probs = predict_probs(bundle, good, batch, tta=tta)
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


def render_table(result: PredictResult, k: int) -> None:
    from rich.table import Table

    n = len(result.predictions)
    table = Table(title=f"{n} image{'s' if n != 1 else ''}", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("predicted", style="bold")
    table.add_column("probability", justify="right")
    ordinals = {2: "2nd", 3: "3rd"}
    for i in range(2, k + 1):
        table.add_column(ordinals.get(i, f"{i}th"))
    for p in result.predictions:
        top = p.top(result.classes, k)
        cells = [p.path, top[0][0], f"{top[0][1]:.3f}"]
        cells += [f"{lab} {pr:.3f}" for lab, pr in top[1:]]
        table.add_row(*cells)
    console.print(table)


def run_predict_cli(
    paths: list[str],
    model: Path,
    top_k: int = 1,
    fmt: str = "table",
    batch: int = 64,
    tta: int = 1,
) -> None:
    """The `leuko predict` command."""
    fmt = fmt.lower().strip()
    if fmt not in FORMATS:
        raise LeukoError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if top_k < 1:
        raise LeukoError(f"--top-k must be at least 1 (got {top_k})")
    if batch < 1:
        raise LeukoError(f"--batch must be at least 1 (got {batch})")
    check_tta(tta)
    if not paths:
        raise LeukoError("give at least one image file, folder or glob")
    resolve_run_dir(model)  # fail fast, before scanning, when there is no model at all
    collected = collect_images(paths)
    bundle = load_bundle(model)
    k = min(top_k, bundle.n_classes)
    result = predict_paths(paths, bundle, batch, collected=collected, tta=tta)

    for path, reason in result.errors:
        err_console.print(
            Text.assemble(("skipped ", "yellow"), f"{path}: {reason}"), soft_wrap=True
        )
    if fmt == "csv":
        write_csv(result, k, sys.stdout)
        sys.stdout.flush()
    elif fmt == "json":
        sys.stdout.write(json.dumps(to_json(result, k), indent=2) + "\n")
        sys.stdout.flush()
    else:
        render_table(result, k)
    if result.errors:
        n_bad = len(result.errors)
        raise LeukoError(
            f"{n_bad} of {n_bad + len(result.predictions)} inputs could not be classified "
            "(reasons above)",
            exit_code=EXIT_PARTIAL,
        )
