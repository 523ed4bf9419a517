"""Rich tables and PNG plots for training history (and, later, confusion matrices).

Plain functions over plain data (a history table, a path), so any command or notebook
can render a run without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from rich.table import Table


def read_history(path: Path) -> pd.DataFrame:
    """Read a Keras CSVLogger history.csv; on resume the last row of an epoch wins."""
    frame = pd.read_csv(path)
    if "epoch" in frame.columns:
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        frame = frame.reset_index(drop=True)
    return frame


def _as_frame(history: pd.DataFrame | Mapping[str, Sequence[float]] | Path) -> pd.DataFrame:
    if isinstance(history, Path):
        return read_history(history)
    if isinstance(history, pd.DataFrame):
        return history
    frame = pd.DataFrame({k: list(v) for k, v in history.items()})
    if "epoch" not in frame.columns:
        frame.insert(0, "epoch", range(len(frame)))
    return frame


def history_table(
    history: pd.DataFrame | Mapping[str, Sequence[float]] | Path,
    best_epoch: int | None = None,
    title: str = "training history",
) -> Table:
    """One row per epoch: loss, accuracy, val loss, val accuracy, learning rate (best starred)."""
    frame = _as_frame(history)
    cols = [
        c
        for c in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
        if c in frame.columns
    ]
    table = Table(title=title, title_justify="left")
    table.add_column("epoch", justify="right")
    for c in cols:
        table.add_column(c.replace("_", " ").replace("learning rate", "lr"), justify="right")
    for _, row in frame.iterrows():
        epoch = int(row["epoch"]) + 1 if "epoch" in frame.columns else 0
        cells = [f"{epoch}{' *' if best_epoch is not None and epoch == best_epoch else ''}"]
        for c in cols:
            v = row[c]
            cells.append("" if pd.isna(v) else (f"{v:.2e}" if c == "learning_rate" else f"{v:.4f}"))
        table.add_row(*cells)
    return table


def plot_curves(
    history: pd.DataFrame | Mapping[str, Sequence[float]] | Path,
    out: Path,
    title: str | None = None,
) -> Path:
    """Loss and accuracy, training vs validation, side by side (like the paper's figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = _as_frame(history)
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
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
