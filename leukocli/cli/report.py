"""`leuko report`: one self-contained HTML page about a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import command
from .console import RichReporter, console
from .options import ModelOption, which_model


@command()
def report(
    run: Annotated[
        Path | None,
        typer.Argument(help="Run or cv run folder (default runs/latest).", show_default=False),
    ] = None,
    model: ModelOption = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Evaluate on this manifest or folder (default: a cv run's "
                          "out-of-fold predictions, or the run's validation manifest)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default RUN/report.html).")
    ] = None,
) -> None:
    """Write one HTML file: options and data, curves, confusion matrix, per-class figures,
    calibration, per-group accuracy and the worst mistakes with their Grad-CAM.

    Images are embedded; it opens from disk with no network. Exit codes: 0 written, 2 bad
    input.
    """
    from .._util.files import atomic_write_text, ensure_writable_dir
    from ..evaluation.report import build
    from ..modeling.bundle import resolve_run_dir

    run = which_model(run, model)
    folder = resolve_run_dir(run)
    target = out if out is not None else folder / "report.html"
    ensure_writable_dir(target.parent)
    html = build(run, data, RichReporter())
    atomic_write_text(target, html)
    console.print(f"report: {target} ({len(html) / 1e6:.1f} MB, self-contained)",
                  soft_wrap=True)
