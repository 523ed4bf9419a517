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
    from .._util.files import atomic_write_json, atomic_write_text, ensure_writable_dir
    from ..evaluation.audit import audit as run_audit
    from ..evaluation.audit import contact_sheet, exclude_report

    if top < 1:
        raise LeukoError(f"--top must be at least 1 (got {top})")
    if model is not None and (unused := _cv_options_given(ctx)):
        verb = "applies" if len(unused) == 1 else "apply"
        raise LeukoError(f"{', '.join(unused)} only {verb} when audit runs the cross-validation "
                         "itself; with --model the cv run's predictions are used as they are")
    ensure_writable_dir(out)
    oof, classes = _oof(data, model, opts, folds, group_by)
    result = run_audit(oof, classes)
    atomic_write_text(_mk(out) / "audit.csv", result.images.to_csv(index=False))
    atomic_write_text(out / "audit_groups.csv", result.groups.to_csv(index=False))
    contact_sheet(result, out / "contact.png", top)
    console.print(groups_table(result.groups.head(top), result.thresholds))
    if exclude is not None:
        atomic_write_json(exclude, exclude_report(result, top))
        info(f"wrote {exclude}: leuko split {data} --exclude {exclude} leaves them out")
    info(f"wrote {out / 'audit.csv'}, {out / 'audit_groups.csv'}, {out / 'contact.png'}")


_OWN = ("data", "model", "out", "top", "exclude")


def _cv_options_given(ctx: typer.Context) -> list[str]:
    """The training/cv options typed on the command line (they would be silently unused)."""
    return ["/".join([*p.opts[:1], *getattr(p, "secondary_opts", [])[:1]])
            for p in ctx.command.params if p.name not in _OWN and p.opts and
            getattr(ctx.get_parameter_source(str(p.name)), "name", "") == "COMMANDLINE"]


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _oof(data: Path, model: Path | None, opts: TrainOptions, folds: int, group_by: str
         ) -> tuple[Any, list[str]]:
    """Out-of-fold predictions for DATA's images, from a cv run or a new one."""
    import pandas as pd

    from ..data.dataset import scan
    from ..modeling.bundle import resolve_run_dir
    from ..training.cv import OOF_FILE

    if model is None:
        model = _run_cv(data, opts, folds, group_by)
    run = resolve_run_dir(model)
    if not (run / OOF_FILE).is_file():
        raise LeukoError(f"--model {model}: not a collected leuko cv run (no {OOF_FILE}); run "
                         f"`leuko cv {data}` first, or leave --model out")
    oof = pd.read_csv(run / OOF_FILE, dtype={"group": str})
    rel = {str(r.path.resolve()): r.rel for r in scan(data).records}
    wanted = set(rel)
    oof["path"] = [str(Path(p).resolve()) for p in oof["path"]]
    missing = wanted - set(oof["path"])
    left_out = _left_out_by_cv(run, {p: rel[p] for p in missing})
    if left_out:
        info(f"{len(left_out)} image(s) the cv run left out (its --exclude) are not audited")
        missing -= left_out
        wanted -= left_out
    if missing:
        raise LeukoError(f"{len(missing)} image(s) of {data} have no out-of-fold prediction in "
                         f"{run} (e.g. {sorted(missing)[0]}): was the cv run made on {data}?")
    classes = [c[len("prob_"):] for c in oof.columns if c.startswith("prob_")]
    oof = oof[oof["path"].isin(wanted)].reset_index(drop=True)
    oof["rel"] = [rel[p] for p in oof["path"]]  # what split --exclude matches on
    return oof, classes


def _left_out_by_cv(run: Path, missing: dict[str, str]) -> set[str]:
    """The missing images (path -> path relative to DATA) that the cv plan's --exclude names."""
    from ..curation.groups import load_exclusions
    from ..training.cv import load_plan

    if not missing:
        return set()
    exclude = load_plan(run).exclude
    if not exclude or not Path(exclude).is_file():
        return set()
    drop, _ = load_exclusions(Path(exclude))
    return {p for p, r in missing.items() if r in drop}


def _run_cv(data: Path, opts: TrainOptions, folds: int, group_by: str) -> Path:
    from datetime import datetime

    from ..training.cv import CVPlan, collect, plan_options, prepare, train_folds

    reporter = RichReporter()
    opts = plan_options(opts, reporter)
    run = Path("runs") / f"audit-cv-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    info(f"no --model: cross-validating {data} into {run} first ({folds} folds)")
    plan = CVPlan(str(data.expanduser().resolve()), folds, group_by, None, 1, opts)
    prepare(run, plan, reporter)
    train_folds(run, plan, list(range(folds)), reporter)
    collect(run, reporter)
    return run


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
