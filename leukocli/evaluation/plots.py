"""PNG plots of runs and evaluations (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._util.files import atomic_write
from .history import as_frame


def confusion_figure(
    cm: np.ndarray | Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> Any:
    """Confusion matrix as the paper's figure 7: rows true, columns predicted.

    Cell colour is the row percentage (so rare classes are as visible as common ones);
    each cell shows the count and the row percentage.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import row_percent

    counts = np.asarray(cm, dtype=int)
    pct = row_percent(counts)
    n = len(labels)
    size = max(4.5, 1.1 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), labels=[str(x) for x in labels], rotation=35, ha="right")
    ax.set_yticks(range(n), labels=[str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            colour = "white" if pct[i, j] > 55 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{pct[i, j]:.1f}%", ha="center", va="center",
                    color=colour, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    fig.tight_layout()
    return fig


def plot_confusion(
    cm: np.ndarray | Sequence[Sequence[int]],
    labels: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
) -> None:
    """confusion_figure written as a PNG."""
    import matplotlib.pyplot as plt

    fig = confusion_figure(cm, labels, title)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def plot_curves(
    history: pd.DataFrame | Mapping[str, Sequence[float]] | Path,
    out: Path,
    title: str | None = None,
) -> Path:
    """Loss and accuracy, training vs validation, side by side (like the paper's figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    frame = as_frame(history)
    epochs = (frame["epoch"] + 1).tolist() if "epoch" in frame.columns else list(
        range(1, len(frame) + 1)
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in (
        (axes[0], "loss", "loss"),
        (axes[1], "accuracy", "accuracy"),
    ):
        for key, name, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s")):
            if key in frame.columns:
                ax.plot(epochs, frame[key].tolist(), style, label=name, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out
