"""`leuko predict`: classify files, folders and globs; a table, or CSV/JSON for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..errors import EXIT_PARTIAL, LeukoError, check_batch
from .app import command
from .console import RichReporter, console, err_console
from .options import INFER_BATCH, InferBatch, Runtime, Tta, check_format, model_or_shipped

if TYPE_CHECKING:
    from ..evaluation.predict import PredictResult


@command()
def predict(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="Run directory, cv run, .keras file, or an exported "
                                   ".onnx/.tflite/SavedModel (leuko export).")] = Path(
        "runs/latest"
    ),
    top_k: Annotated[int, typer.Option(help="Show the K most probable classes.")] = 1,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv or json (csv/json go clean to stdout).")
    ] = "table",
    batch: InferBatch = INFER_BATCH,
    tta: Tta = 1,
    explain: Annotated[
        Path | None,
        typer.Option(help="Also write a Grad-CAM heatmap PNG per image into this folder "
                          "(through Keras)."),
    ] = None,
    runtime: Runtime = "auto",
) -> None:
    """Classify images with a trained model.

    Exit codes: 0 when every input was classified; 1 when some were unreadable (they are
    listed on stderr, or as {path, error} objects in --format json); 2 for bad input.
    """
    from ..evaluation.predict import collect_images, predict_paths
    from ..modeling.bundle import resolve_run_dir

    fmt, runtime = _check(paths, top_k, fmt, batch, tta, runtime)
    model = model_or_shipped(model)
    resolve_run_dir(model)  # fail fast, before scanning, when there is no model at all
    if explain is not None:
        from .._util.files import ensure_writable_dir

        ensure_writable_dir(explain, "explain")
    collected = collect_images(paths)
    from ..modeling.bundle import load_bundle

    # Grad-CAM needs Keras's gradients; otherwise the twin answers when it is fresh
    bundle = load_bundle(model, "keras" if explain is not None else runtime, RichReporter())
    if explain is not None:
        from ..evaluation.explain import require_gradients

        require_gradients(bundle)
    result = predict_paths(paths, bundle, batch, collected=collected, tta=tta,
                           reporter=RichReporter())
    if explain is not None and result.predictions:
        from ..evaluation.explain import explain_files

        explain_files(bundle, [Path(p.path) for p in result.predictions], explain, None,
                      reporter=RichReporter())
        err_console.print(f"Grad-CAM heatmaps in {explain}", soft_wrap=True)
    show(result, min(top_k, bundle.n_classes), fmt)


def _check(paths: list[str], top_k: int, fmt: str, batch: int, tta: int, runtime: str
           ) -> tuple[str, str]:
    """Every option check before any work: (format, runtime) as given, normalised."""
    from ..evaluation.predict import FORMATS
    from ..modeling.augment import check_tta
    from ..modeling.twin import check_runtime

    runtime = check_runtime(runtime)
    fmt = fmt.lower().strip()
    check_format(fmt, FORMATS)
    if top_k < 1:
        raise LeukoError(f"--top-k must be at least 1 (got {top_k})")
    check_batch(batch)
    check_tta(tta)
    if not paths:
        raise LeukoError("give at least one image file, folder or glob")
    return fmt, runtime


def show(result: PredictResult, k: int, fmt: str) -> None:
    """Print the result as asked; exit code 1 when some inputs could not be classified."""
    from ..evaluation.predict import to_json, write_csv

    for path, reason in result.errors:
        err_console.print(Text.assemble(("skipped ", "yellow"), f"{path}: {reason}"),
                          soft_wrap=True)
    if fmt == "csv":
        write_csv(result, k, sys.stdout)
        sys.stdout.flush()
    elif fmt == "json":
        sys.stdout.write(json.dumps(to_json(result, k), indent=2) + "\n")
        sys.stdout.flush()
    else:
        console.print(render_table(result, k))
    if result.errors:
        n_bad = len(result.errors)
        raise LeukoError(
            f"{n_bad} of {n_bad + len(result.predictions)} inputs could not be classified "
            "(reasons above)",
            exit_code=EXIT_PARTIAL,
        )


def render_table(result: PredictResult, k: int) -> Table:
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
    return table
