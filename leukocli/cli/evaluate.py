"""`leuko evaluate`: accuracy with a confidence interval, per-class report, confusion matrix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..errors import EXIT_PARTIAL, LeukoError, check_batch
from .app import command
from .console import RichReporter, console, err_console, info
from .options import INFER_BATCH, InferBatch, Runtime, Tta, model_or_shipped

if TYPE_CHECKING:
    from ..evaluation.evaluate import Evaluation


@command()
def evaluate(
    data: Annotated[
        Path | None,
        typer.Argument(help="CSV manifest or class folder (default splits/test.csv or val.csv)."),
    ] = None,
    model: Annotated[Path, typer.Option(help="Run directory, cv run, .keras file, or an exported "
                                   ".onnx/.tflite/SavedModel (leuko export).")] = Path(
        "runs/latest"
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write metrics JSON here ('-': to stdout, "
                                      "the tables to stderr).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json etc. (default: the run).")
    ] = None,
    batch: InferBatch = INFER_BATCH,
    group_by: Annotated[
        str | None,
        typer.Option(help="auto, column:NAME or pattern:REGEX for group-level accuracy."),
    ] = None,
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="Rename a data class: OLD=NEW (repeatable).")
    ] = None,
    ignore_unknown: Annotated[
        bool, typer.Option("--ignore-unknown", help="Skip images of classes the model lacks.")
    ] = False,
    tta: Tta = 1,
    all_classes: Annotated[
        bool, typer.Option("--all-classes", help="Let every class of the model compete, "
                           "also those the data does not hold (default: the model chooses "
                           "among the data's classes).")
    ] = False,
    runtime: Runtime = "auto",
) -> None:
    """Evaluate a trained model: accuracy with CI, per-class report, confusion matrix.

    Exit codes: 0 when every image was evaluated; 1 when some were unreadable and left
    out (the outputs are still written); 2 for bad input.
    """
    from ..evaluation.evaluate import evaluate
    from ..modeling.twin import check_runtime

    runtime = check_runtime(runtime)
    model = model_or_shipped(model)
    data_path, model_path, target = _check(data, model, out, batch, group_by, tta)
    ev = evaluate(data_path, model, batch, group_by, map_ or [], ignore_unknown, tta,
                  reporter=RichReporter(), all_classes=all_classes, runtime=runtime)
    ev.metrics.update({"data": str(data_path.resolve()), "model": str(model_path),
                       "mapping": list(map_ or []), "tta": tta > 1, "tta_views": tta})
    title = f"{data_path.name}: accuracy {100 * ev.metrics['accuracy']:.1f}% (n={ev.metrics['n']})"
    _write_and_show(ev, target, json_path, title)
    if ev.metrics["n_unreadable"]:
        raise LeukoError(
            f"{ev.metrics['n_unreadable']} unreadable image(s) were left out of these figures",
            exit_code=EXIT_PARTIAL,
        )


def _check(
    data: Path | None, model: Path, out: Path | None, batch: int, group_by: str | None,
    tta: int,
) -> tuple[Path, Path, Path]:
    """Every check before the work: (data, model path, output folder)."""
    from .._util.files import ensure_writable_dir
    from ..curation.groups import check_group_spec
    from ..evaluation.evaluate import default_data, output_dir
    from ..modeling.augment import check_tta
    from ..modeling.bundle import resolve_run_dir

    check_batch(batch)
    check_tta(tta)
    if group_by is not None:
        check_group_spec(group_by)
    data_path = Path(data) if data is not None else default_data()
    if data is None:
        info(f"evaluating on {data_path}")
    if not data_path.exists():
        raise LeukoError(f"{data_path}: no such file or directory")
    model_path = resolve_run_dir(model)  # fail fast when there is no model at all
    target = output_dir(model_path, model_path if model_path.is_dir() else None, out)
    ensure_writable_dir(target)  # before the work, not after it
    return data_path, model_path, target


def _write_and_show(ev: Evaluation, target: Path, json_path: Path | None, title: str) -> None:
    """The output files and the tables; `--json -` pipes the metrics alone to stdout."""
    from ..evaluation.evaluate import write_outputs

    to_stdout = json_path is not None and str(json_path) == "-"
    written = write_outputs(ev, target, None if to_stdout else json_path, title)
    render_metrics(ev.metrics, err_console if to_stdout else console)
    info("wrote " + ", ".join(str(p) for p in written))
    if to_stdout:
        sys.stdout.write(json.dumps(ev.metrics, indent=2, default=str) + "\n")
        sys.stdout.flush()


def render_metrics(m: dict[str, Any], to: Console = console) -> None:
    """Rich tables: summary, per-class report, confusion matrix, top confusions."""
    to.print(summary_table(m))
    to.print(per_class_table(m))
    to.print(confusion_table(m["labels"], np.asarray(m["confusion_matrix"])))
    if m["top_confusions"]:
        to.print(top_confusions_table(m))


def summary_table(m: dict[str, Any], title: str = "evaluation") -> Table:
    lo, hi = m["accuracy_ci"]
    summary = Table(title=title, title_justify="left", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("images", str(m["n"]))
    if m.get("tta"):
        summary.add_row("test-time augmentation", f"{m['tta_views']} views averaged")
    summary.add_row(
        "accuracy",
        f"[bold]{100 * m['accuracy']:.2f}%[/bold]  (95% CI {100 * lo:.1f}-{100 * hi:.1f})",
    )
    if "group_accuracy" in m:
        glo, ghi = m["group_accuracy_ci"]
        summary.add_row(
            "group accuracy",
            f"[bold]{100 * m['group_accuracy']:.2f}%[/bold]  ({m['n_groups_correct']}/"
            f"{m['n_groups']} groups, 95% CI {100 * glo:.1f}-{100 * ghi:.1f})",
        )
    summary.add_row("macro F1", f"{m['macro_avg']['f1']:.3f}")
    summary.add_row("calibration error (ECE)", f"{m['ece']:.3f}")
    return summary


def per_class_table(m: dict[str, Any]) -> Table:
    per = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for c in m["labels"]:
        d = m["per_class"][c]
        per.add_row(c, f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['f1']:.3f}",
                    str(d["support"]))
    per.add_section()
    for key, name in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        d = m[key]
        per.add_row(name, f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['f1']:.3f}",
                    str(d["support"]))
    return per


def confusion_table(labels: list[str], cm: np.ndarray) -> Table:
    from ..evaluation.metrics import row_percent

    pct = row_percent(cm)
    conf = Table(title="confusion matrix (rows true, columns predicted; count and row %)",
                 title_justify="left")
    conf.add_column("true \\ predicted")
    for c in labels:
        conf.add_column(c, justify="right")
    for i, c in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            text = f"{cm[i, j]} ({pct[i, j]:.1f}%)"
            cells.append(f"[bold green]{text}[/bold green]" if i == j and cm[i, j] else text)
        conf.add_row(c, *cells)
    return conf


def top_confusions_table(m: dict[str, Any]) -> Table:
    top = Table(title="most frequent confusions", title_justify="left")
    for col in ("true", "predicted as", "count", "% of true"):
        top.add_column(col, justify="right" if col in ("count", "% of true") else "left")
    for d in m["top_confusions"]:
        top.add_row(d["true"], d["predicted"], str(d["count"]), f"{d['percent_of_true']:.1f}%")
    return top
