"""`leuko explain`: Grad-CAM heatmaps showing where the model looked."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import EXIT_PARTIAL, LeukoError
from .app import command
from .console import RichReporter, console, warn
from .options import TABLE_JSON, TableOrJson, check_format, model_or_shipped


@command()
def explain(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs.")],
    model: Annotated[Path, typer.Option(help="Run directory, cv run or .keras file.")] = Path(
        "runs/latest"
    ),
    out: Annotated[Path, typer.Option(help="Folder for the heatmap PNGs.")] = Path("explain"),
    class_name: Annotated[
        str | None,
        typer.Option("--class", help="Explain this class instead of the predicted one."),
    ] = None,
    fmt: TableOrJson = "table",
) -> None:
    """Grad-CAM for each image: the image beside its heatmap, as a PNG in --out.

    Works for every backbone and through the cell crop (the map lands on the whole image
    where the crop came from). Exit codes: 0 done, 1 some images unreadable, 2 bad input.
    """
    from .._util.files import ensure_writable_dir
    from ..evaluation.predict import collect_images
    from ..modeling.bundle import resolve_run_dir

    check_format(fmt, TABLE_JSON)
    model = model_or_shipped(model)
    resolve_run_dir(model)
    ensure_writable_dir(out)
    files, errors = collect_images(paths)
    rows = run_explain(files, model, out, class_name, errors)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        console.print(table(rows))
    if errors:
        for path, reason in errors:
            warn(f"skipped {path}: {reason}")
        raise LeukoError(f"{len(errors)} input(s) could not be explained (reasons above)",
                         exit_code=EXIT_PARTIAL)


def run_explain(files: list[Path], model: Path, out: Path, class_name: str | None,
                errors: list[tuple[str, str]]) -> list[dict[str, object]]:
    """Check the files, load the model, write the maps (shared with predict --explain)."""
    from ..data.images import check_images
    from ..evaluation.explain import explain_files
    from ..modeling.bundle import load_bundle

    reporter = RichReporter()
    reasons = check_images(files, "decode", "checking images", reporter)
    good = [p for p, r in zip(files, reasons, strict=True) if r is None]
    errors += [(str(p), r) for p, r in zip(files, reasons, strict=True) if r is not None]
    if not good:
        return []
    return explain_files(load_bundle(model), good, out, class_name, reporter=reporter)


def table(rows: list[dict[str, object]]) -> Table:
    t = Table(title=f"Grad-CAM of {len(rows)} image(s)", title_justify="left")
    for col in ("path", "predicted", "probability", "map for", "heatmap"):
        t.add_column(col, overflow="fold", justify="right" if col == "probability" else "left")
    for r in rows:
        t.add_row(str(r["path"]), str(r["predicted"]), f"{float(str(r['probability'])):.3f}",
                  str(r["explained"]), str(r["gradcam"]))
    return t
