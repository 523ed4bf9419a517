"""`leuko export`: SavedModel, ONNX and LiteRT artefacts of a run, with a card beside each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import command
from .console import console, info
from .options import ModelOption, model_or_shipped, which_model


@command()
def export(
    run: Annotated[
        Path | None,
        typer.Argument(help="Run directory, cv run or .keras file (default runs/latest).",
                       show_default=False),
    ] = None,
    model_: ModelOption = None,
    fmt: Annotated[
        str, typer.Option("--format", help="savedmodel, onnx or litert (TensorFlow Lite).")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write (default RUN/export/model.onnx, .tflite, or a "
                          "SavedModel folder)."),
    ] = None,
    quantize: Annotated[
        str,
        typer.Option(help="none, float16 (half-size weights) or dynamic-int8 (quarter-size "
                          "weights); onnx and litert only."),
    ] = "none",
) -> None:
    """Export a trained model for deployment; leuko predict/evaluate run the result too.

    .onnx and .tflite artefacts run without TensorFlow (pip install 'leukocli[onnx]' or
    'leukocli[litert]'); a card (ARTEFACT.leuko.json) beside each names its classes and
    input size. Exit codes: 0 written, 2 bad input (nothing written).
    """
    from ..modeling.bundle import resolve_run_dir
    from ..modeling.export import card_path, check_export_options

    check_export_options(fmt, quantize)
    model = model_or_shipped(which_model(run, model_))
    resolve_run_dir(model)  # fail fast, before TensorFlow loads, when there is no model
    from ..modeling.export import export_run

    card = export_run(model, fmt, quantize, out)
    size = _size(Path(card["path"]))
    console.print(f"exported {card['format']} ({card['quantize']}): {card['path']} "
                  f"({size / 1e6:.1f} MB)", soft_wrap=True)
    info(f"card: {card_path(Path(card['path']))}; try: leuko predict IMAGE --model "
         f"{card['path']}")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
