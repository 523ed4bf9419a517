"""`leuko audit`: likely label errors, by image and by group, from out-of-fold predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import LeukoError
from ..training.options import TrainOptions
from .app import command
from .console import RichReporter, console, info
from .options import with_train_options


@command()
@with_train_options(without=("train_csv", "val_csv"))
def audit(
    ctx: typer.Context,
    opts: TrainOptions,
    data: Annotated[Path, typer.Argument(help="Dataset folder or CSV manifest to audit.")],
    model: Annotated[
        Path | None,
        typer.Option(help="A leuko cv run of DATA (its oof.csv); without it, audit runs the "
                          "cross-validation itself with the training options below."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for audit.csv, audit_groups.csv, "
                                           "contact.png.")] = Path("audit"),
    top: Annotated[int, typer.Option(help="How many groups to show and to exclude.")] = 10,
    exclude: Annotated[
        Path | None,
        typer.Option("--write-exclude", help="Write the top suspect groups as a dedupe-style "
                                             "report for `leuko split --exclude`."),
    ] = None,
    folds: Annotated[int, typer.Option(help="Folds, when audit runs the cv itself.")] = 5,
    group_by: Annotated[str, typer.Option(help="Groups, when audit runs the cv itself.")] = "auto",
) -> None:
    """Rank images and whole groups by how strongly held-out models contradict their label.

    Never changes the data. Exit codes: 0 done (suspects or not), 2 bad input.
    """
    from ..training.audit_run import check_top, run_audit

    check_top(top)
    if model is not None and (unused := _cv_options_given(ctx)):
        verb = "applies" if len(unused) == 1 else "apply"
        raise LeukoError(f"{', '.join(unused)} only {verb} when audit runs the cross-validation "
                         "itself; with --model the cv run's predictions are used as they are")
    done = run_audit(data, model=model, opts=opts, folds=folds, group_by=group_by, out=out,
                     top=top, exclude=exclude, reporter=RichReporter())
    console.print(groups_table(done.result.groups.head(top), done.result.thresholds))
    if exclude is not None:
        info(f"wrote {exclude}: leuko split {data} --exclude {exclude} leaves them out")
    info(f"wrote {out / 'audit.csv'}, {out / 'audit_groups.csv'}, {out / 'contact.png'}")


_OWN = ("data", "model", "out", "top", "exclude")


def _cv_options_given(ctx: typer.Context) -> list[str]:
    """The training/cv options typed on the command line (they would be silently unused)."""
    return ["/".join([*p.opts[:1], *getattr(p, "secondary_opts", [])[:1]])
            for p in ctx.command.params if p.name not in _OWN and p.opts and
            getattr(ctx.get_parameter_source(str(p.name)), "name", "") == "COMMANDLINE"]


def groups_table(groups: Any, thresholds: dict[str, float]) -> Table:
    t = Table(title="most contradicted groups (out of fold; * = confident suspect)",
              title_justify="left")
    for col in ("#", "group", "images", "label", "held-out call", "p(label)", "example"):
        t.add_column(col, justify="right" if col in ("#", "images", "p(label)") else "left",
                     overflow="fold")
    for i, r in enumerate(groups.itertuples(), 1):
        t.add_row(str(i), f"{r.group}{' *' if r.suspect else ''}", str(r.n), r.label,
                  r.predicted, f"{r.self_confidence:.3f}", Path(r.example).name)
    t.caption = "thresholds: " + ", ".join(f"{c} {v:.2f}" for c, v in thresholds.items())
    return t
