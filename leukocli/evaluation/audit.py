"""Likely label errors: images and whole groups that held-out models contradict.

From out-of-fold probabilities (a model never saw the image it scores), as confident
learning does (Northcutt et al., cleanlab's find_label_issues): each class c gets a
threshold t_c, the mean probability of c over the images labelled c; an image is a
suspect when another class j reaches its own threshold t_j and beats the given label.
Suspects are ranked by self-confidence, the probability of their given label, lowest
first. Groups (a source photo and its augmented siblings, a patient) are ranked the same
way on their images' mean probabilities, because a wrong label is usually the photo's,
not one view's. Nothing here changes the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._util.files import atomic_write
from ..data.images import open_rgb


@dataclass
class AuditResult:
    """Per image and per group, ranked: the most contradicted first."""

    images: pd.DataFrame  # path, rel, label, group, predicted, self_confidence, suspect
    groups: pd.DataFrame  # group, label, n, predicted, self_confidence, suspect, example
    thresholds: dict[str, float]


def class_thresholds(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]
                     ) -> np.ndarray:
    """t_c: the mean out-of-fold probability of class c over the images labelled c."""
    t = np.zeros(len(classes))
    for c in range(len(classes)):
        mine = probs[labels == c, c]
        t[c] = float(mine.mean()) if len(mine) else 1.0
    return t


def _suspect(probs: np.ndarray, labels: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Confident-learning off-diagonal: another class at its threshold beats the label."""
    above = probs >= t[None, :]
    above[np.arange(len(labels)), labels] = False
    other = np.where(above, probs, -1.0).max(axis=1)
    return other > probs[np.arange(len(labels)), labels]


def audit(oof: pd.DataFrame, classes: Sequence[str]) -> AuditResult:
    """Rank `oof` (path, label, group, prob_<class>...) images and groups by suspicion."""
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in oof["label"]])
    t = class_thresholds(probs, labels, classes)
    images = pd.DataFrame({
        "path": oof["path"], "rel": oof["rel"] if "rel" in oof else oof["path"],
        "label": oof["label"], "group": oof["group"].astype(str),
        "predicted": [classes[i] for i in probs.argmax(1)],
        "self_confidence": probs[np.arange(len(labels)), labels].round(6),
        "suspect": _suspect(probs, labels, t),
    })
    groups = _groups(images, probs, labels, t, classes)
    images = images.sort_values(["self_confidence", "path"]).reset_index(drop=True)
    return AuditResult(images, groups, {c: round(float(t[i]), 4) for i, c in enumerate(classes)})


def _groups(images: pd.DataFrame, probs: np.ndarray, labels: np.ndarray, t: np.ndarray,
            classes: Sequence[str]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for group, idx in images.groupby("group", sort=False).indices.items():
        mean = probs[idx].mean(axis=0)
        label = int(np.bincount(labels[idx]).argmax())
        example = int(idx[int(np.argmin(probs[idx, label]))])
        rows.append({
            "group": group, "label": classes[label], "n": len(idx),
            "predicted": classes[int(mean.argmax())],
            "self_confidence": round(float(mean[label]), 6),
            "suspect": bool(_suspect(mean[None, :], np.array([label]), t)[0]),
            "example": images.loc[example, "path"],
        })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["self_confidence", "group"]).reset_index(drop=True)


def exclude_report(result: AuditResult, top: int) -> dict[str, Any]:
    """A dedupe-style report of the top suspect groups, for `leuko split --exclude`."""
    chosen = result.groups[result.groups.suspect].head(top)
    members = result.images.groupby("group")["rel"].apply(list)
    return {"source": "leuko audit", "groups": [
        {"kind": "label issue", "files": sorted(members[g]), "labels": [lab],
         "conflict": True, "keep": None}
        for g, lab in zip(chosen.group, chosen.label, strict=True)
    ]}


def contact_sheet(result: AuditResult, path: Path, top: int = 12) -> None:
    """The most contradicted groups' worst images in a grid: given label, then held-out call."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.groups.head(top)
    cols = 4
    n_rows = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(cols * 3.0, n_rows * 2.6), squeeze=False)
    try:
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, (_, r) in zip(axes.ravel(), rows.iterrows(), strict=False):
            ax.imshow(open_rgb(r["example"]))
            ax.set_title(f"{r['group']} (n={r['n']})\nlabel {r['label']} -> {r['predicted']}\n"
                         f"p(label) {r['self_confidence']:.2f}", fontsize=7)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)
