"""Metrics as small pure functions over arrays: no files, no printing, no TensorFlow.

`y_true`/`y_pred` are integer class indices into `labels`; `probs` is (n, n_classes).
Everything returned is plain Python (floats, ints, lists, dicts) so it goes straight
into metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix as _sk_confusion
from sklearn.metrics import precision_recall_fscore_support

# Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; honest at small n and near 0 or 1.

    >>> lo, hi = wilson_interval(71, 71)
    >>> round(lo, 3), hi
    (0.949, 1.0)
    """
    if n <= 0:
        return (0.0, 1.0)
    if successes < 0 or successes > n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def confusion(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
              n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    return _sk_confusion(
        np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int), labels=list(range(n_classes))
    )


def row_percent(cm: np.ndarray) -> np.ndarray:
    """Each row as percentages of its true class (0 for empty rows)."""
    cm = np.asarray(cm, dtype=float)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(totals > 0, 100.0 * cm / np.where(totals == 0, 1, totals), 0.0)
    return out


def per_class_report(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support plus macro and weighted averages."""
    idx = list(range(len(labels)))
    yt, yp = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=idx, zero_division=0)
    per_class = {
        str(name): {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(labels)
    }
    out: dict[str, Any] = {"per_class": per_class}
    for avg in ("macro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(
            yt, yp, labels=idx, average=avg, zero_division=0
        )
        out[f"{avg}_avg"] = {
            "precision": float(pa),
            "recall": float(ra),
            "f1": float(fa),
            "support": int(s.sum()),
        }
    return out


def top_confusions(cm: np.ndarray, labels: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The k most frequent off-diagonal (true, predicted) pairs, largest first."""
    cm = np.asarray(cm)
    totals = cm.sum(axis=1)
    pairs = [
        (int(cm[i, j]), i, j)
        for i in range(cm.shape[0])
        for j in range(cm.shape[1])
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [
        {
            "true": str(labels[i]),
            "predicted": str(labels[j]),
            "count": c,
            "percent_of_true": 100.0 * c / totals[i] if totals[i] else 0.0,
        }
        for c, i, j in pairs[:k]
    ]


def expected_calibration_error(
    probs: np.ndarray, y_true: Sequence[int] | np.ndarray, n_bins: int = 15
) -> float:
    """ECE: confidence-weighted gap between top-1 confidence and accuracy, equal-width bins.

    A model that says 0.9 should be right 90% of the time; ECE is the average miss.
    """
    probs = np.asarray(probs, dtype=float)
    yt = np.asarray(y_true, dtype=int)
    if probs.ndim != 2 or len(probs) != len(yt):
        raise ValueError("probs must be (n, n_classes) and match y_true")
    if len(yt) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == yt).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi]; a confidence of exactly 0 goes in the first bin.
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def group_accuracy(
    probs: np.ndarray, y_true: Sequence[int] | np.ndarray, groups: Sequence[str]
) -> dict[str, Any]:
    """Accuracy per group (e.g. per source cell): mean probability over its images, argmax.

    Augmented siblings of one photo are not independent tests; counting groups gives the
    honest sample size. A group whose images carry different labels is scored on its
    most common label and counted in `mixed_label_groups`.
    """
    probs = np.asarray(probs, dtype=float)
    yt = np.asarray(y_true, dtype=int)
    if len(groups) != len(yt):
        raise ValueError("groups must have one entry per image")
    index: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(str(g), []).append(i)
    correct = 0
    mixed = 0
    per_group: list[dict[str, Any]] = []
    for g, rows in index.items():
        labels_here = yt[rows]
        values, counts = np.unique(labels_here, return_counts=True)
        label = int(values[np.argmax(counts)])
        if len(values) > 1:
            mixed += 1
        pred = int(probs[rows].mean(axis=0).argmax())
        correct += int(pred == label)
        per_group.append({"group": g, "n": len(rows), "label": label, "predicted": pred})
    n_groups = len(index)
    lo, hi = wilson_interval(correct, n_groups)
    return {
        "group_accuracy": correct / n_groups if n_groups else 0.0,
        "group_accuracy_ci": [lo, hi],
        "n_groups": n_groups,
        "n_groups_correct": correct,
        "mixed_label_groups": mixed,
        "groups": per_group,
    }


def classification_metrics(
    probs: np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str | None] | None = None,
    n_bins: int = 15,
    top_k_confusions: int = 5,
) -> dict[str, Any]:
    """Everything `leuko evaluate` reports, from probabilities and true indices."""
    probs = np.asarray(probs, dtype=float)
    yt = np.asarray(y_true, dtype=int)
    n_classes = len(labels)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"probs must have shape (n, {n_classes})")
    yp = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    cm = confusion(yt, yp, n_classes)
    n = int(len(yt))
    n_correct = int(np.trace(cm))
    lo, hi = wilson_interval(n_correct, n)
    out: dict[str, Any] = {
        "accuracy": n_correct / n if n else 0.0,
        "accuracy_ci": [lo, hi],
        "n": n,
        "n_correct": n_correct,
        "labels": [str(x) for x in labels],
    }
    out.update(per_class_report(yt, yp, labels))
    out["confusion_matrix"] = cm.astype(int).tolist()
    out["confusion_matrix_row_percent"] = np.round(row_percent(cm), 2).tolist()
    out["top_confusions"] = top_confusions(cm, labels, top_k_confusions)
    out["ece"] = expected_calibration_error(probs, yt, n_bins) if n else 0.0
    out["ece_bins"] = n_bins
    if groups is not None and any(g is not None and g != "" for g in groups):
        # Images without a group stand alone: each is its own group.
        keyed = [str(g) if g not in (None, "") else f"\0image:{i}" for i, g in enumerate(groups)]
        ga = group_accuracy(probs, yt, keyed)
        ga.pop("groups")
        out.update(ga)
    return out
