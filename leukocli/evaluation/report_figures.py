"""The figures and tables of `leuko report`, as data the HTML template shows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util.files import read_json_object
from ..modeling.bundle import META_FILE
from .history import read_history

if TYPE_CHECKING:
    from .report import Predictions


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(run: Path) -> str | None:
    """Loss and accuracy per epoch; for a cv run, each fold's validation accuracy."""
    from .report import png_uri

    histories = ([(run.name, run / "history.csv")] if (run / "history.csv").is_file() else
                 [(p.parent.name, p) for p in sorted(run.glob("fold-*/history.csv"))])
    if not histories:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, path in histories:
        h = read_history(path)
        epochs = (h["epoch"] + 1).tolist()
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            if len(histories) == 1 and key in h:
                ax.plot(epochs, h[key], "-o", ms=3, label="training")
            if f"val_{key}" in h:
                ax.plot(epochs, h[f"val_{key}"], "-s", ms=3,
                        label="validation" if len(histories) == 1 else name)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png_uri(fig)


def confusion_uri(metrics: dict[str, Any]) -> str:
    """The confusion-matrix figure as a PNG data URI (metrics.confusion is the counts)."""
    from .plots import confusion_figure
    from .report import png_uri

    return png_uri(confusion_figure(metrics["confusion_matrix"], metrics["labels"],
                                    f"accuracy {100 * metrics['accuracy']:.1f}% "
                                    f"(n={metrics['n']})"))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[str, list[dict]]:
    """Confidence against accuracy in equal-width bins (a reliability diagram)."""
    from .report import png_uri

    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(right[m].mean())})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.bar([r["lo"] for r in rows], [r["accuracy"] for r in rows], width=1.0 / bins,
           align="edge", alpha=0.7, edgecolor="black", label="accuracy in bin")
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", ms=3,
            color="black")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    return png_uri(fig), rows


def groups_table(pred: Predictions, y: np.ndarray, limit: int = 30) -> list[dict[str, Any]]:
    """Per group: images, label, mean-probability call and share right; worst first."""
    by: dict[str, list[int]] = {}
    for i, g in enumerate(pred.groups):
        by.setdefault(g, []).append(i)
    rows: list[dict[str, Any]] = []
    for g, idx in by.items():
        mean = pred.probs[idx].mean(axis=0)
        label = int(np.bincount(y[idx]).argmax())
        rows.append({"group": g, "n": len(idx), "label": pred.classes[label],
                     "called": pred.classes[int(mean.argmax())],
                     "right": float((pred.probs[idx].argmax(1) == y[idx]).mean())})
    rows.sort(key=lambda r: (float(r["right"]), -int(r["n"]), str(r["group"])))
    return rows[:limit]


def context(run: Path, pred: Predictions, metrics: dict[str, Any], y: np.ndarray
            ) -> dict[str, Any]:
    meta = read_json_object(run / META_FILE, "run metadata")
    cv = read_json_object(run / "cv.json", "cv plan") if (run / "cv.json").is_file() else None
    rel_uri, rel_rows = reliability(pred.probs, y)
    manifests = meta.get("manifests") or {}
    return {
        "title": f"leuko report: {run.name}", "run": str(run), "source": pred.source,
        "meta": {k: meta.get(k) for k in ("backbone", "weights", "img_size", "classes",
                                          "precision", "recipe", "crop_cell", "crop_scale",
                                          "epochs_done", "wall_time_s", "leuko_version",
                                          "tensorflow_version", "created") if k in meta},
        "options": {k: v for k, v in (meta.get("options") or (cv or {}).get("options")
                                      or {}).items()
                    if not (cv and k in ("train_csv", "val_csv"))},
        "manifests": manifests, "cv": cv, "metrics": metrics,
        "curves": curves(run), "confusion": confusion_uri(metrics), "reliability": rel_uri,
        "reliability_rows": rel_rows, "groups": groups_table(pred, y),
    }
