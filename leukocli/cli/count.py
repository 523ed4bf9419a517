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
from .options import model_or_shipped


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
    fmt: Annotated[str, typer.Option("--format", help="table or json (stdout).")] = "table",
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
) -> None:
    """Find every white cell in whole-field photos, classify each, and report the
    differential count per photo and in total.

    Exit codes: 0 done (photos with no white cell are rows with zero cells), 1 some
    photos unreadable (reported and skipped), 2 bad input.
    """
    from ..counting.locate import LocatorParams
    from ..evaluation.predict import collect_images

    if fmt not in ("table", "json"):
        raise LeukoError(f"--format must be table or json (got {fmt!r})")
    if not 0.02 <= cell_size <= 1.0:
        raise LeukoError(f"--cell-size must be between 0.02 and 1 (got {cell_size})")
    from ..counting.voc import check_annotations

    photos, errors = collect_images(paths)
    if evaluate:
        check_annotations(photos)
    photos = _readable(photos, errors)
    bundle = _model(model)
    summary, evaluation = _run(photos, bundle, LocatorParams(cell=cell_size), out, evaluate,
                               errors)
    if fmt == "json":
        sys.stdout.write(json.dumps({**summary, "evaluation": evaluation}, indent=2) + "\n")
    else:
        console.print(differential_table(summary))
        if evaluation:
            console.print(evaluation_table(evaluation))
    for path, reason in errors:
        warn(f"skipped {path}: {reason}")
    info(f"wrote {out / 'cells.csv'}, {out / 'counts.csv'}, {out / 'counts.json'} and "
         f"{out / 'annotated'}/")
    if errors:
        raise LeukoError(f"{len(errors)} photo(s) could not be counted (reasons above)",
                         exit_code=EXIT_PARTIAL)


def _readable(photos: list[Path], errors: list[tuple[str, str]]) -> list[Path]:
    """The photos that decode (a decompression bomb, say, is skipped like predict skips
    it); the others are added to `errors`."""
    from ..data.images import check_images

    reasons = check_images(photos, "decode", "checking photos", RichReporter())
    errors += [(str(p), r) for p, r in zip(photos, reasons, strict=True) if r is not None]
    good = [p for p, r in zip(photos, reasons, strict=True) if r is None]
    if not good:
        raise LeukoError(f"none of the photos is readable ({errors[0][0]}: {errors[0][1]})")
    return good


def _model(model: str) -> Any:
    if model.strip().lower() == "none":
        return None
    from ..modeling.bundle import load_bundle, resolve_run_dir

    model = str(model_or_shipped(model))

    resolve_run_dir(Path(model))
    return load_bundle(Path(model))


def _run(photos: list[Path], bundle: Any, params: Any, out: Path, evaluate: bool,
         errors: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from .._util.files import atomic_write_json, atomic_write_text, ensure_writable_dir
    from ..counting.count import (
        annotate,
        cells_csv,
        count_photos,
        counts,
        counts_csv,
        evaluate_counts,
    )

    ensure_writable_dir(out)
    reporter = RichReporter()
    cells, bad = count_photos(photos, bundle, params, reporter)
    errors += bad
    readable = [p for p in photos if str(p) not in {path for path, _ in bad}]
    classes = list(bundle.classes) if bundle is not None else ["WBC"]
    summary = counts(cells, readable, classes)
    atomic_write_text(out / "cells.csv", cells_csv(cells))
    atomic_write_text(out / "counts.csv", counts_csv(summary))
    evaluation = evaluate_counts(cells, readable, classes) if evaluate else None
    atomic_write_json(out / "counts.json", {**summary, "evaluation": evaluation})
    with reporter.task("annotating", len(readable)) as advance:
        for p in readable:
            annotate(p, [c for c in cells if c.photo == str(p)], classes,
                     out / "annotated" / f"{p.stem}.png")
            advance()
    return summary, evaluation


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
