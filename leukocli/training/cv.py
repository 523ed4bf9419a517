"""Grouped k-fold cross-validation: K trainings, out-of-fold predictions, one ensemble.

The run folder holds everything, so a run can stop and go on, and K machines can each
train one fold of it (`fold=i`) before one `collect` assembles the figures:

    RUN/cv.json       the plan (data, folds, seed, options) and, once collected, metrics
    RUN/folds.csv     path, label, group, fold of every image
    RUN/fold-i/       train.csv and val.csv (the held-out fold), a normal training run,
                      and oof.csv: the fold model's predictions for its held-out images
    RUN/oof.csv       every image's out-of-fold prediction (after collect)
    RUN/leuko.json    the K fold models as an ensemble that evaluate and predict accept
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._util.files import (
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    output_lock,
    read_json_object,
)
from .._util.progress import SILENT, Reporter, spoken
from ..curation.folds import assign_folds, check_folds, thin_classes
from ..curation.split import load_grouped
from ..data.dataset import add_own_columns, parse_renames, relabel, require_classes
from ..errors import Interrupted, LeukoError, cli_only, cmd, opt
from ..modeling.bundle import META_FILE, MODEL_FILE, load_bundle, point_latest, write_ensemble
from .options import TrainOptions, new_run_dir, resolve, with_backbone

CV_FILE = "cv.json"
FOLDS_FILE = "folds.csv"
OOF_FILE = "oof.csv"


@dataclass(frozen=True)
class CVPlan:
    """What a cv run is: saved in cv.json, so a continued run or a --fold job reuses it."""

    data: str
    folds: int
    group_by: str
    exclude: str | None
    tta: int
    options: TrainOptions

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "folds": self.folds, "group_by": self.group_by,
                "exclude": self.exclude, "tta": self.tta, "options": self.options.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CVPlan:
        return cls(str(d["data"]), int(d["folds"]), str(d["group_by"]), d.get("exclude"),
                   int(d.get("tta", 1)), TrainOptions.from_json(d["options"]))


def fold_dir(run: Path, k: int) -> Path:
    return run / f"fold-{k}"


def plan_options(opts: TrainOptions, reporter: Reporter) -> TrainOptions:
    """The training options of every fold: checked, and keeping the last epoch by default.

    Each fold validates on its held-out part; keeping the best epoch would let that part
    choose the model and flatter the figure, so cv keeps the last unless told otherwise.
    """
    if opts.keep is None:
        opts = replace(opts, keep="last")
    elif opts.keep.strip().lower() == "best":
        reporter.warn(spoken(reporter, f"{opt('keep', 'best')} lets each held-out fold choose "
                             "its own epoch; the cross-validated figure will be optimistic"))
    resolve(opts)
    return with_backbone(opts)


# --------------------------------------------------------------------------- planning
_OR_COLLECT = cli_only(f", or {opt('collect', 'RUN')}")  # collecting is the CLI's own option


def plan_run(data: Path | None, *, out: Path | None, folds: int, fold: int | None,
             group_by: str, exclude: Path | None, tta: int, opts: TrainOptions,
             reporter: Reporter = SILENT) -> tuple[Path, CVPlan]:
    """The run folder and plan a cv call means, every option checked before any work:
    a new plan for `data`, or, with no data, the plan saved in `out` (a run to continue).

    The one place `lk.cross_validate` and `leuko cv` decide it, so both name the same
    folder and make the same plan from the same options.
    """
    from ..curation.groups import check_group_spec
    from ..modeling.augment import check_tta

    check_tta(tta)
    if data is None:
        if out is None or not (Path(out) / CV_FILE).exists():
            check_folds(folds, fold)
            raise LeukoError(f"give a dataset folder or CSV manifest (or {opt('out', 'RUN')} of "
                             f"a cv run to continue it{_OR_COLLECT})")
        saved = load_plan(Path(out))
        check_folds(saved.folds, fold)  # a fold job of a saved 10-fold run may be fold 7
        reporter.info(f"continuing {out} with its saved plan")
        return Path(out), saved
    check_folds(folds, fold)
    if not Path(data).exists():
        raise LeukoError(f"{data}: no such file or directory")
    check_group_spec(group_by)
    opts = plan_options(opts, reporter)
    run = Path(out) if out is not None else new_run_dir(opts.backbone, "cv")
    plan = CVPlan(str(Path(data).expanduser().resolve()), folds, group_by,
                  str(Path(exclude).expanduser().resolve()) if exclude else None, tta, opts)
    return run, plan


def prepare(
    run: Path, plan: CVPlan, reporter: Reporter = SILENT
) -> pd.DataFrame:
    """Write (or check) the run's plan and fold manifests; returns folds.csv's table.

    A run folder that already holds a cv run continues it when the plan is the same, and
    refuses otherwise, naming the first thing that differs.
    """
    ensure_writable_dir(run)
    saved = run / CV_FILE
    if saved.exists():
        _check_same_plan(run, plan)
        return pd.read_csv(run / FOLDS_FILE, dtype={"group": str})
    ds, groups, _ = load_grouped(Path(plan.data), plan.group_by,
                                 Path(plan.exclude) if plan.exclude else None, reporter,
                                 relabel=plan.options.relabel)
    ds = relabel(ds, parse_renames(plan.options.mapping))  # folds.csv speaks the mapped names
    require_classes(ds)  # before any fold folder is written
    labels = [r.label for r in ds.records]
    fold = assign_folds(labels, groups, plan.folds, plan.options.seed)
    for c in thin_classes(labels, groups, plan.folds):
        reporter.warn(spoken(reporter, f"class {c} has fewer groups than "
                             f"{opt('folds', plan.folds)}: some folds hold none of it"))
    table = pd.DataFrame({"path": [str(r.path) for r in ds.records], "label": labels,
                          "group": groups, "fold": fold, "rel": [r.rel for r in ds.records]})
    add_own_columns(table, ds.records)
    with output_lock(run, "leuko cv (planning)"):
        if saved.exists():  # another job planned it meanwhile
            _check_same_plan(run, plan)
            return pd.read_csv(run / FOLDS_FILE, dtype={"group": str})
        for k in range(plan.folds):
            _write_fold_manifests(run, k, table)
        atomic_write_text(run / FOLDS_FILE, table.to_csv(index=False))
        atomic_write_json(saved, {"kind": "leuko cv", "status": "planned", **plan.to_json()})
    return table


def _check_same_plan(run: Path, plan: CVPlan) -> None:
    old = read_json_object(run / CV_FILE, "cv plan")
    mine = plan.to_json()
    for key in ("data", "folds", "group_by", "exclude", "tta"):
        if old.get(key) != mine[key]:
            raise LeukoError(f"{run} holds a cv run with {opt(key)} {old.get(key)!r}, not "
                             f"{mine[key]!r}; use another {opt('out')}")
    for key, value in mine["options"].items():
        if key not in ("train_csv", "val_csv") and old["options"].get(key) != value:
            raise LeukoError(f"{run} holds a cv run trained with {key}={old['options'].get(key)!r}"
                             f", not {value!r}; use another {opt('out')}")


def _write_fold_manifests(run: Path, k: int, table: pd.DataFrame) -> None:
    cols = [c for c in table.columns if c != "fold"]
    for name, part in (("train.csv", table.fold != k), ("val.csv", table.fold == k)):
        atomic_write_text(fold_dir(run, k) / name, table[part][cols].to_csv(index=False))


def load_plan(run: Path) -> CVPlan:
    p = Path(run)
    if not (p / CV_FILE).is_file():
        raise LeukoError(f"{p} is not a leuko cv run (no {CV_FILE})")
    return CVPlan.from_json(read_json_object(p / CV_FILE, "cv plan"))


# --------------------------------------------------------------------------- training
def train_folds(run: Path, plan: CVPlan, which: list[int], reporter: Reporter = SILENT) -> None:
    """Train (or continue) the given folds and predict each one's held-out images.

    A fold whose oof.csv exists is done; one stopped mid-way continues from its last
    epoch. Ctrl-C raises Interrupted saying which folds are done and how to go on.
    """
    for k in which:
        check_folds(plan.folds, k)
    with reporter.task("folds", len(which)) as advance:
        for n, k in enumerate(which):
            try:
                _train_fold(run, plan, k, reporter)
            except KeyboardInterrupt:
                done = [i for i in range(plan.folds) if (fold_dir(run, i) / OOF_FILE).exists()]
                raise Interrupted(
                    f"fold {k} stopped (its finished epochs are saved); folds done: "
                    f"{', '.join(map(str, done)) or 'none'}; run the same command with "
                    f"{opt('out', run)} to go on from there"
                ) from None
            advance(1, note=f"fold {k} done ({n + 1}/{len(which)})")


def _train_fold(run: Path, plan: CVPlan, k: int, reporter: Reporter) -> None:
    from .loop import train

    d = fold_dir(run, k)
    if (d / OOF_FILE).exists():
        reporter.info(f"fold {k}: done already")
        return
    meta = d / META_FILE
    status = read_json_object(meta, "run metadata").get("status") if meta.exists() else None
    if status != "finished" or not (d / MODEL_FILE).exists():
        reporter.info(f"fold {k}/{plan.folds - 1}: training on the other folds")
        # folds.csv holds the relabelled labels: a fold trains on them as they are
        opts = replace(plan.options, train_csv=str(d / "train.csv"), val_csv=str(d / "val.csv"),
                       relabel=None)
        result = train(opts, out=d, resume=meta.exists(), reporter=reporter, latest=False)
        if result.interrupted:
            raise KeyboardInterrupt
    _predict_held_out(run, plan, k, reporter)


def _predict_held_out(run: Path, plan: CVPlan, k: int, reporter: Reporter) -> None:
    from ..evaluation.predict import predict_probs

    d = fold_dir(run, k)
    bundle = load_bundle(d)
    val = pd.read_csv(d / "val.csv", dtype={"group": str})
    probs = predict_probs(bundle, val["path"].tolist(), description=f"fold {k}: held-out",
                          tta=plan.tta, reporter=reporter)
    frame = val[["path", "label", "group"]].copy()
    frame.insert(3, "fold", k)
    frame.insert(4, "predicted", [bundle.classes[i] for i in probs.argmax(axis=1)])
    for j, c in enumerate(bundle.classes):
        frame[f"prob_{c}"] = np.round(probs[:, j], 6)
    atomic_write_text(d / OOF_FILE, frame.to_csv(index=False))


# --------------------------------------------------------------------------- collecting
def missing_folds(run: Path, plan: CVPlan) -> list[int]:
    return [k for k in range(plan.folds) if not (fold_dir(run, k) / OOF_FILE).exists()]


def _fold_manifests(run: Path, plan: CVPlan) -> dict[str, Any]:
    """Each fold's train/val manifest with its fingerprint, for the report's data table."""
    out: dict[str, Any] = {}
    for k in range(plan.folds):
        meta = read_json_object(fold_dir(run, k) / META_FILE, "run metadata")
        for name, m in (meta.get("manifests") or {}).items():
            out[f"fold {k} {name}"] = m
    return out


def collect(run: Path, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Assemble oof.csv, the metrics in cv.json, confusion.png and the ensemble's leuko.json."""
    from ..evaluation.metrics import classification_metrics
    from ..evaluation.plots import plot_confusion

    plan = load_plan(run)
    missing = missing_folds(run, plan)
    if missing:
        raise LeukoError(
            f"fold(s) {', '.join(map(str, missing))} of {run} are not finished; train them "
            f"with `{cmd('cross_validate', out=run, fold='N')}` (or all with "
            f"`{cmd('cross_validate', 'DATA', out=run)}`), "
            "then collect"
        )
    oof = pd.concat([pd.read_csv(fold_dir(run, k) / OOF_FILE, dtype={"group": str})
                     for k in range(plan.folds)], ignore_index=True)
    first = read_json_object(fold_dir(run, 0) / META_FILE, "run metadata")
    classes = [str(c) for c in first["classes"]]
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in oof["label"]])
    metrics = classification_metrics(probs, y, classes, oof["group"].astype(str).tolist())
    metrics["folds"] = _per_fold(run, plan, oof)
    metrics["tta_views"] = plan.tta
    saved = read_json_object(run / CV_FILE, "cv plan")
    atomic_write_json(run / CV_FILE, {**saved, "status": "collected", "metrics": metrics})
    atomic_write_text(run / OOF_FILE, oof.to_csv(index=False))
    plot_confusion(metrics["confusion_matrix"], classes, run / "confusion.png",
                   title=f"{plan.folds}-fold out-of-fold: {100 * metrics['accuracy']:.1f}% "
                         f"(n={metrics['n']})")
    write_ensemble(run, [fold_dir(run, k).name for k in range(plan.folds)], {
        "kind": "ensemble of cv folds", "classes": classes, "img_size": first["img_size"],
        "backbone": first.get("backbone"), "preprocessing": first.get("preprocessing"),
        "cv": CV_FILE, "options": plan.options.to_json(), "manifests": _fold_manifests(run, plan),
    })
    note = point_latest(run)
    if note:
        reporter.warn(note)
    reporter.info(f"wrote {run / OOF_FILE}, {run / CV_FILE}, {run / 'confusion.png'}; the "
                  f"{plan.folds} fold models form an ensemble in {run}")
    return metrics


def _per_fold(run: Path, plan: CVPlan, oof: pd.DataFrame) -> dict[str, Any]:
    acc = [float((part["predicted"] == part["label"]).mean())
           for _, part in oof.groupby("fold", sort=True)]
    seconds = [float(read_json_object(fold_dir(run, k) / META_FILE, "run metadata")
                     .get("wall_time_s", 0.0)) for k in range(plan.folds)]
    return {
        "accuracy": acc, "mean": float(np.mean(acc)), "std": float(np.std(acc, ddof=1)),
        "min": float(np.min(acc)), "max": float(np.max(acc)),
        "images": [int(n) for n in oof.groupby("fold", sort=True).size()],
        "train_seconds": seconds, "train_seconds_total": float(sum(seconds)),
    }


def run_planned(run: Path, plan: CVPlan, fold: int | None = None,
                reporter: Reporter = SILENT) -> dict[str, Any] | None:
    """Write the plan, train the folds asked for (one, or every one not done) and collect
    once all are done: `leuko cv` and `lk.cross_validate` alike. None while folds are
    missing (a fold job, or an interrupted run); `missing_folds` says which."""
    prepare(run, plan, reporter)
    train_folds(run, plan, [fold] if fold is not None else list(range(plan.folds)), reporter)
    if fold is not None or missing_folds(run, plan):
        return None
    return collect(run, reporter)
