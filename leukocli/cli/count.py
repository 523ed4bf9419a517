"""`leuko count`: white cells in whole smear photos, classified, and the differential."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import EXIT_PARTIAL, LeukoError
from .app import command
from .console import RichReporter, console, info, warn
from .options import TABLE_JSON, Runtime, TableOrJson, check_format, model_or_shipped


@command()
def count(
    paths: Annotated[list[str], typer.Argument(help="Smear photos: files, folders or globs.")],
    model: Annotated[
        str,
        typer.Option(help="Run directory, cv run, .keras or exported model that classifies "
                          "the cells; none = locate only."),
    ] = "runs/latest",
    out: Annotated[Path, typer.Option(help="Folder for cells.csv, counts.csv/json and "
                                           "annotated PNGs.")] = Path("count"),
    fmt: TableOrJson = "table",
    cell_size: Annotated[
        float,
        typer.Option(help="Expected white-cell diameter as a share of the photo's shorter "
                          "side (0.4 for BCCD-like 100x fields)."),
    ] = 0.4,
    evaluate: Annotated[
        bool,
        typer.Option("--eval", help="Score against Pascal VOC boxes (Annotations/ beside the "
                                    "photos): detection precision and recall at IoU 0.5, "
                                    "and class accuracy where boxes are named."),
    ] = False,
    runtime: Runtime = "auto",
    corrections: Annotated[
        Path | None,
        typer.Option(help="A corrections CSV saved by `leuko review`: each cell a person "
                          "reclassified counts in the person's class (or leaves the "
                          "differential: not a white cell)."),
    ] = None,
) -> None:
    """Find every white cell in whole-field photos, classify each, and report the
    differential count per photo and in total.

    Exit codes: 0 done (photos with no white cell are rows with zero cells), 1 some
    photos unreadable (reported and skipped), 2 bad input.
    """
    from ..counting.pipeline import check_cell_size, run_count

    check_format(fmt, TABLE_JSON)
    check_cell_size(cell_size)
    bundle = None if model.strip().lower() == "none" else model_or_shipped(model)
    result = run_count(paths, model=bundle, out=out, cell_size=cell_size, evaluate=evaluate,
                       corrections=corrections, runtime=runtime, reporter=RichReporter())
    if fmt == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        console.print(differential_table(result.summary))
        if result.evaluation:
            console.print(evaluation_table(result.evaluation))
    if result.corrections is not None:
        c = result.corrections
        info(f"corrections from {c['file']}: {c['changed']} cell(s) changed class, "
             f"{c['not_white_cells']} not a white cell, {c['unclassifiable']} unclassifiable")
    for path, reason in result.unreadable:
        warn(f"skipped {path}: {reason}")
    info(f"wrote {out / 'cells.csv'}, {out / 'counts.csv'}, {out / 'counts.json'} and "
         f"{out / 'annotated'}/")
    if result.unreadable:
        raise LeukoError(f"{len(result.unreadable)} photo(s) could not be counted (reasons "
                         "above)", exit_code=EXIT_PARTIAL)


def differential_table(summary: dict[str, Any]) -> Table:
    total = summary["total"]
    n_photos = len(summary["photos"])
    t = Table(title=f"differential count: {total['cells']} white cells in {n_photos} photo(s)",
              title_justify="left")
    t.add_column("class")
    t.add_column("cells", justify="right")
    t.add_column("per 100 white cells", justify="right")
    for c in summary["classes"]:
        t.add_row(c, str(total["count"][c]), f"{total['percent'][c]:.1f}")
    empty = sum(1 for v in summary["photos"].values() if v["cells"] == 0)
    t.caption = f"{empty} photo(s) with no white cell" if empty else None
    return t


def evaluation_table(e: dict[str, Any]) -> Table:
    t = Table(title="against the annotations (IoU 0.5)", title_justify="left",
              show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("photos", str(e["photos_evaluated"]))
    t.add_row("recall", f"{e['recall']:.3f} ({e['true_positives']} found, {e['missed']} missed)")
    t.add_row("precision", f"{e['precision']:.3f} ({e['false_positives']} false)")
    if e["class_accuracy"] is not None:
        t.add_row("class accuracy", f"{e['class_accuracy']:.3f} of {e['classified']} named cells")
    return t
