"""A run's training history (history.csv) as a table, for plots, tables and reports.

Plain functions over plain data, so any command or notebook can read a run without
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd


def read_history(path: Path) -> pd.DataFrame:
    """Read a Keras CSVLogger history.csv; on resume the last row of an epoch wins."""
    frame = pd.read_csv(path)
    if "epoch" in frame.columns:
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        frame = frame.reset_index(drop=True)
    return frame


def as_frame(history: pd.DataFrame | Mapping[str, Sequence[float]] | Path) -> pd.DataFrame:
    if isinstance(history, Path):
        return read_history(history)
    if isinstance(history, pd.DataFrame):
        return history
    frame = pd.DataFrame({k: list(v) for k, v in history.items()})
    if "epoch" not in frame.columns:
        frame.insert(0, "epoch", range(len(frame)))
    return frame
