"""`leuko cv`: grouped k-fold cross-validation, out-of-fold figures, the folds as an ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..training.options import TrainOptions
from .app import command
from .console import RichReporter, console
from .evaluate import confusion_table, per_class_table
from .options import TTA_HELP, Exclude, GroupBy, with_train_options


@command()
@with_train_options(without=("train_csv", "val_csv"))
def cv(
    opts: TrainOptions,
    data: Annotated[
        Path | None,
        typer.Argument(help="Dataset folder or CSV manifest (not needed to continue --out RUN)."),
    ] = None,
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    fold: Annotated[
        int | None, typer.Option(help="Train only this fold (0-based), e.g. one per machine.")
    ] = None,
    collect: Annotated[
        Path | None,
        typer.Option(help="Assemble oof.csv and cv.json of this cv run once all folds exist."),
    ] = None,
    group_by: GroupBy = "auto",
    exclude: Exclude = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder (default runs/cv-<timestamp>-<backbone>); an existing "
                          "one is continued."),
    ] = None,
    tta: Annotated[int, typer.Option(help=TTA_HELP + " Applies to the held-out predictions.")] = 1,
) -> None:
    """Cross-validate a training recipe by groups: K trainings, out-of-fold predictions with
    their spread, and the K fold models as one ensemble (evaluate/predict --model RUN).

    Takes the same training options as `leuko train`. Exit codes: 0 done, 2 bad input,
    130 interrupted (run the same command with --out RUN to go on).
    """
    from ..training.cv import collect as collect_run
    from ..training.cv import plan_run

    reporter = RichReporter()
    if collect is not None:
        render(collect_run(collect, reporter), collect)
        return
    run, plan = plan_run(data, out=out, folds=folds, fold=fold, group_by=group_by,
                         exclude=exclude, tta=tta, opts=opts, reporter=reporter)
    _run(run, plan, fold, reporter)


def _run(run: Path, plan: Any, fold: int | None, reporter: RichReporter) -> None:
    from ..training.cv import missing_folds, run_planned

    metrics = run_planned(run, plan, fold, reporter)
    if metrics is not None:
        render(metrics, run)
        return
    left = missing_folds(run, plan)
    console.print(f"{plan.folds - len(left)} of {plan.folds} folds done in {run}"
                  + (f"; collect with: leuko cv --collect {run}" if not left else ""),
                  soft_wrap=True)


def render(m: dict[str, Any], run: Path) -> None:
    """The cross-validated figures, the per-fold spread, per-class recall, confusion."""
    f = m["folds"]
    table = Table(title=f"cross-validation ({len(f['accuracy'])} folds, out of fold)",
                  title_justify="left", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    lo, hi = m["accuracy_ci"]
    table.add_row("images", str(m["n"]))
    ci = f"95% CI {100 * lo:.1f}-{100 * hi:.1f}"
    table.add_row("accuracy per image", f"[bold]{100 * m['accuracy']:.2f}%[/bold]  ({ci})")
    if "group_accuracy" in m:
        glo, ghi = m["group_accuracy_ci"]
        table.add_row("accuracy per group",
                      f"{100 * m['group_accuracy']:.2f}%  ({m['n_groups_correct']}/{m['n_groups']}"
                      f", 95% CI {100 * glo:.1f}-{100 * ghi:.1f})")
    table.add_row("per fold", "  ".join(f"{100 * a:.1f}" for a in f["accuracy"]))
    table.add_row("fold mean ± sd",
                  f"{100 * f['mean']:.2f} ± {100 * f['std']:.2f}% "
                  f"(range {100 * f['min']:.1f}-{100 * f['max']:.1f})")
    table.add_row("training time", f"{f['train_seconds_total'] / 60:.1f} min in all")
    console.print(table)
    console.print(per_class_table(m))
    import numpy as np

    console.print(confusion_table(m["labels"], np.asarray(m["confusion_matrix"])))
    console.print(f"out-of-fold predictions: {run / 'oof.csv'}; figures: {run / 'cv.json'}; "
                  f"ensemble: leuko predict IMAGE --model {run}", soft_wrap=True)
