"""`leuko train`: fit a classifier; a run folder and `runs/latest` come out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import Interrupted
from ..training.options import TrainOptions
from .app import command
from .console import RichReporter, console
from .options import with_train_options

if TYPE_CHECKING:
    import pandas as pd

    from ..training.loop import TrainResult


@command()
@with_train_options()
def train(
    opts: TrainOptions,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<timestamp>-<backbone>).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in --out (or latest).")
    ] = False,
) -> None:
    """Train a classifier; writes runs/<name>/ and points runs/latest at it once it has a model."""
    from ..training.options import resolve

    if not resume:
        resolve(opts)  # every option checked before TensorFlow loads
    from ..training.loop import train as train_run

    result = train_run(opts, out=out, resume=resume, reporter=RichReporter())
    if result.interrupted:
        raise Interrupted(interrupt_message(result))
    summarize(result)


def interrupt_message(result: TrainResult) -> str:
    """What an interrupted run left, truthfully, and how to continue it."""
    where = result.run_dir
    resume = f"leuko train --resume --out {where}"
    if result.epochs_done == 0 and not result.checkpoint:
        return (f"no epoch of {where} had finished, so nothing is saved but its settings; "
                f"start again with: {resume}")
    saved = f"epochs 1-{result.epochs_done} of {result.epochs_planned} are done"
    if result.best_epoch is not None:
        saved += f" and the model of epoch {result.best_epoch} is saved in {where}"
    return f"{saved}; continue with: {resume}"


def summarize(result: TrainResult) -> None:
    from ..evaluation.history import read_history
    from ..training.run import CURVES_FILE, HISTORY_FILE

    hist = result.run_dir / HISTORY_FILE
    if hist.exists():
        console.print(history_table(read_history(hist), best_epoch=result.best_epoch))
    best = result.best
    if result.best_epoch is not None:
        which = "last epoch" if result.keep == "last" else "best epoch"
        if best.get("val_loss") is None:  # --val none
            console.print(
                f"{which} {result.best_epoch} saved (no validation part): training loss "
                f"{best.get('loss', float('nan')):.4f}, accuracy "
                f"{best.get('accuracy', float('nan')):.4f} (augmented, not a held-out figure)"
            )
        else:
            console.print(
                f"{which} {result.best_epoch} saved: "
                f"val loss {best.get('val_loss', float('nan')):.4f}, "
                f"val accuracy {best.get('val_accuracy', float('nan')):.4f}"
            )
    pointer = result.run_dir.parent / "latest"
    latest = f"{pointer} left alone" if result.latest_note else f"{pointer} points at it"
    console.print(
        f"run saved in {result.run_dir} (model.keras, leuko.json, {HISTORY_FILE}, "
        f"{CURVES_FILE}); {latest} ({result.wall_time_s:.0f}s)", soft_wrap=True,
    )


def history_table(
    history: pd.DataFrame | Mapping[str, Sequence[float]] | Path,
    best_epoch: int | None = None,
    title: str = "training history",
) -> Table:
    """One row per epoch: loss, accuracy, val loss, val accuracy, learning rate (kept starred)."""
    import pandas as pd

    from ..evaluation.history import as_frame

    frame = as_frame(history)
    cols = [c for c in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
            if c in frame.columns]
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
