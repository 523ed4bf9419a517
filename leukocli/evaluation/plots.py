"""PNG plots for evaluation (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_confusion(
    cm: np.ndarray | Sequence[Sequence[int]],
    labels: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
) -> None:
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
    try:
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
