"""Making models: `train` and `cross_validate`, and `audit`, which reads (or makes) a
cross-validation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.progress import SILENT, Reporter
from ..errors import Interrupted, LeukoError
from ..training.options import TrainOptions, resolve
from ._common import DEFAULTS as _D
from ._common import PathLike, cv_options, train_options

if TYPE_CHECKING:
    from ..training.audit_run import AuditRun
    from ..training.loop import TrainResult


def train(train: PathLike, val: PathLike, *, out: PathLike | None = None,
          img_size: tuple[int, int] = _D.img_size, batch: int = _D.batch,
          backbone: str = _D.backbone, weights: str = _D.weights, recipe: str = _D.recipe,
          epochs: int | None = _D.epochs, lr: float = _D.lr, crop_cell: int | None = None,
          crop_scale: float | None = None, label_smoothing: float | None = None,
          keep: str | None = None, augment: bool = _D.augment, unfreeze: int = _D.unfreeze,
          class_weights: str = _D.class_weights, patience: int = _D.patience,
          precision: str = _D.precision, strategy: str = _D.strategy, seed: int = _D.seed,
          mapping: Mapping[str, str] | None = None, relabel: PathLike | None = None,
          balance_by: str | None = None, resume: bool = False,
          reporter: Reporter = SILENT) -> TrainResult:
    """Train a classifier into a run folder (model.keras, leuko.json, history.csv, curves).

    The options are `leuko train`'s (None = the recipe's choice), all checked before
    TensorFlow loads; runs/latest beside the run points at it once it has a model.

    Args:
        train, val: manifests or class folders; val="none": no validation, a fixed
            schedule and the last epoch kept.
        out: the run folder (default runs/<timestamp>-<backbone>).
        mapping: {OLD: NEW} renames of the training data's classes (--map OLD=NEW).
        relabel: a corrections CSV saved by the `review` page: the images it names take
            the person's class (or are left out); recorded in leuko.json.
        balance_by: a column of the `train` manifest (a lab, a site) whose values weigh
            alike: each value's rows repeated to about the largest one's count.
        resume: continue the interrupted run in `out` (or runs/latest), its options kept.
    Returns:
        TrainResult: run_dir, epochs_done, best_epoch and best (loss, accuracy, ...).
    Raises:
        LeukoError: a bad option or dataset, a run already in `out`; Interrupted on
        Ctrl-C (the finished epochs are kept: resume=True goes on).
    """
    opts = train_options(train, val, mapping, img_size=img_size, batch=batch, epochs=epochs,
                    lr=lr, backbone=backbone, weights=weights, unfreeze=unfreeze,
                    augment=augment, class_weights=class_weights, patience=patience,
                    precision=precision, strategy=strategy, seed=seed, recipe=recipe,
                    crop_cell=crop_cell, crop_scale=crop_scale,
                    label_smoothing=label_smoothing, keep=keep,
                    relabel=relabel, balance_by=balance_by)
    if not resume:
        resolve(opts)  # every option checked before TensorFlow loads
    from ..training.loop import train as train_run

    result = train_run(opts, out=None if out is None else Path(out), resume=resume,
                       reporter=reporter)
    if result.interrupted:
        raise Interrupted(f"training of {result.run_dir} interrupted after "
                          f"{result.epochs_done} of {result.epochs_planned} epochs; continue "
                          f"with train(..., out={str(result.run_dir)!r}, resume=True)")
    return result


def cross_validate(data: PathLike | None = None, *, folds: int = 5, fold: int | None = None,
                   group_by: str = "auto", exclude: PathLike | None = None,
                   out: PathLike | None = None, tta: int = 1,
                   mapping: Mapping[str, str] | None = None, reporter: Reporter = SILENT,
                   **options: Any) -> dict[str, Any] | None:
    """Grouped k-fold cross-validation: K trainings, out-of-fold figures, one ensemble.

    Args:
        data: dataset folder or manifest; None continues the cv run in `out` as planned.
        fold: train only this fold (0-based), e.g. one per machine.
        exclude: a dedupe report JSON (a path: cv.json keeps it for continuing runs).
        out: the run folder (default runs/cv-<timestamp>-<backbone>); continued if it
            holds the same plan.
        options: `train`'s training options (img_size, backbone, epochs, crop_cell,
            relabel, ...).
    Returns:
        The out-of-fold metrics saved in cv.json (with per-fold spread under "folds"),
        or None while folds are missing (only `fold` was trained).
    Raises:
        LeukoError: bad options, another plan in `out`. Interrupted: Ctrl-C.
    """
    from ..training import cv

    opts = cv_options(mapping, **options) if data is not None else TrainOptions()
    run, plan = cv.plan_run(None if data is None else Path(data),
                            out=None if out is None else Path(out), folds=folds, fold=fold,
                            group_by=group_by, exclude=None if exclude is None else Path(exclude),
                            tta=tta, opts=opts, reporter=reporter)
    return cv.run_planned(run, plan, fold, reporter)



def audit(data: PathLike, *, model: PathLike | None = None, out: PathLike | None = None,
          top: int = 10, write_exclude: PathLike | None = None, folds: int | None = None,
          group_by: str | None = None, cv_out: PathLike | None = None,
          mapping: Mapping[str, str] | None = None, reporter: Reporter = SILENT,
          **options: Any) -> AuditRun:
    """Likely label errors: images and whole groups that held-out models contradict.

    Never changes the data. As `leuko audit`, through the same core (`run_audit`).

    Args:
        data: the dataset folder or CSV manifest to audit.
        model: a collected cv run of `data` (its oof.csv). None: cross-validate `data`
            first (`folds`, default 5; `group_by`, default auto; `mapping` and `train`'s
            training `options`) into `cv_out` (default runs/audit-cv-<timestamp>).
        out: also write audit.csv, audit_groups.csv and contact.png here (only then).
        top: the groups on the contact sheet and in the exclude report.
        write_exclude: write the top suspect groups here as a dedupe-style report, for
            `split(exclude=...)`.
    Returns:
        AuditRun: `.result` (`.images`, `.groups` ranked most contradicted first,
        `.thresholds`), `.cv_run`, `.left_out` (images the cv run excluded), `.written`,
        `.exclude` (the report written to `write_exclude`).
    Raises:
        LeukoError: bad options (cv options with `model`), not a cv run, a cv run of
        other data. Interrupted: Ctrl-C during the cross-validation.
    """
    from ..training.audit_run import run_audit

    cv_given = sorted([*options, *(k for k, v in (("folds", folds), ("group_by", group_by),
                                                   ("cv_out", cv_out), ("mapping", mapping))
                                   if v is not None)])
    if model is not None and cv_given:
        verb = "applies" if len(cv_given) == 1 else "apply"
        raise LeukoError(f"{', '.join(cv_given)} only {verb} when audit runs the "
                         "cross-validation itself; with model= the cv run's predictions are "
                         "used as they are")
    return run_audit(Path(data), model=None if model is None else Path(model),
                     opts=cv_options(mapping, **options), folds=5 if folds is None else folds,
                     group_by=group_by or "auto", cv_out=None if cv_out is None else Path(cv_out),
                     out=None if out is None else Path(out), top=top,
                     exclude=None if write_exclude is None else Path(write_exclude),
                     reporter=reporter)
