"""The training run: plan, build the model, fit phase by phase, finish the run folder.

`train` is the library entry point behind `leuko train` (and each fold of `leuko cv`).
It is silent unless given a Reporter; its result says how the run ended.
"""

from __future__ import annotations

import math
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from .._tf import keras, tf
from .._util.files import ensure_writable_dir, output_lock
from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, cmd, first_line, opt
from ..evaluation.plots import plot_curves
from ..modeling.backbones import RUN_PREFIX, get_backbone_spec
from ..modeling.bundle import META_FILE
from ..modeling.loader import build_dataset
from ..modeling.model import build_model, set_backbone_trainable, start_head_from
from .callbacks import CtrlC, EpochProgress, RunRecorder, SyncMovingStatistics, ctrl_c_deferred
from .hardware import make_strategy, pick_precision
from .options import TrainOptions, TrainPlan, new_run_dir, resolve, with_backbone
from .run import (
    CHECKPOINT_DIR,
    CURVES_FILE,
    Inputs,
    RunFolder,
    find_resume_dir,
    load_inputs,
    read_run_options,
)
from .schedule import (
    Phase,
    class_weight_map,
    compile_for_training,
    head_epochs_for,
    make_optimizer,
    phases_for,
)


@dataclass
class TrainResult:
    """What a run produced; `interrupted` runs can be continued with resume=True."""

    run_dir: Path
    interrupted: bool
    epochs_done: int
    epochs_planned: int
    best_epoch: int | None
    best: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    keep: str = "best"  # how best_epoch was chosen: lowest val loss, or the last epoch
    checkpoint: bool = False  # a mid-run checkpoint exists to resume from
    latest_note: str | None = None  # why runs/latest was left alone, if it was


def run_metadata(plan: TrainPlan, inputs: Inputs, precision: str, strategy: str
                 ) -> dict[str, Any]:
    """What leuko.json says about a run, beside its progress (epochs_done, best, status)."""
    opts, recipe = plan.options, plan.recipe
    spec = get_backbone_spec(opts.backbone)
    weights = plan.weights
    if weights not in (None, "imagenet") and not str(weights).startswith("run:"):
        weights = f"file:{weights}"
    return {
        "leuko_version": __version__, "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__, "python_version": platform.python_version(),
        "classes": inputs.classes, "img_size": list(opts.img_size), "backbone": spec.name,
        "weights": weights, "preprocessing": spec.describe_preprocessing(),
        "input": "raw RGB 0-255 float32, shape (None, h, w, 3); output softmax over classes",
        "manifests": inputs.manifests, "seed": opts.seed, "precision": precision,
        "strategy": strategy, "augment": opts.augment, "recipe": recipe.name,
        "augment_policy": recipe.augment if opts.augment else None,
        "crop_cell": recipe.crop_cell, "crop_scale": recipe.crop_scale,
        "label_smoothing": recipe.label_smoothing,
        "balance": recipe.balance, "stain_norm": recipe.stain_norm,
        "lr_schedule": recipe.schedule, "weight_decay": recipe.weight_decay,
        "epochs_planned": recipe.epochs,
        "head_epochs": head_epochs_for(recipe.epochs) if plan.weights is not None else 0,
        "options": opts.to_json(), "status": "running",
    }


# --------------------------------------------------------------------------- entry point
def train(
    opts: TrainOptions,
    out: Path | None = None,
    resume: bool = False,
    reporter: Reporter = SILENT,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    latest: bool = True,
) -> TrainResult:
    """Train (or resume) a run; returns a TrainResult (interrupted=True after Ctrl-C).

    With resume=True the options saved in `out` (or runs/latest) are reused and `opts`
    is ignored; training continues from the last completed epoch to the planned count.
    Two runs never write one folder: the second refuses, naming the first's pid.
    `latest=False` leaves runs/latest alone (cv's folds).
    """
    if resume:
        run_dir = find_resume_dir(out)
        opts = TrainOptions.from_json(read_run_options(run_dir)["options"])
    else:
        run_dir = Path(out) if out is not None else new_run_dir(
            get_backbone_spec(with_backbone(opts).backbone).name
        )
    plan = resolve(opts)
    ensure_writable_dir(run_dir)
    _check_fresh(run_dir, resume)
    inputs = load_inputs(plan.options, reporter)
    with output_lock(run_dir, "leuko train"):
        _check_fresh(run_dir, resume)  # another run may have started here meanwhile
        meta: dict[str, Any] = read_run_options(run_dir) if resume else {}
        if meta.get("status") == "finished":
            reporter.info(f"{run_dir} already finished ({meta.get('epochs_done')} epochs); "
                          "nothing to resume")
            return _result(run_dir, meta, interrupted=False)
        if resume:
            reporter.info(f"resuming {run_dir} from epoch "
                          f"{int(meta.get('epochs_done', 0)) + 1}/{plan.recipe.epochs}")
        return _with_precision(plan, inputs, RunFolder(run_dir, meta, reporter, latest), resume,
                               reporter, extra_callbacks)


def _check_fresh(run_dir: Path, resume: bool) -> None:
    if not resume and (run_dir / META_FILE).exists():
        raise LeukoError(
            f"{run_dir} already holds a run; use {opt('resume')} to continue it or another "
            f"{opt('out')}"
        )


def _with_precision(
    plan: TrainPlan, inputs: Inputs, run: RunFolder, resume: bool,
    reporter: Reporter, extra_callbacks: Sequence[keras.callbacks.Callback],
) -> TrainResult:
    """Seed, precision policy and strategy around the fit; the policy is restored after."""
    keras.utils.set_random_seed(plan.options.seed)
    precision = pick_precision(plan.options.precision)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        strategy, strategy_desc = make_strategy(plan.options.strategy, reporter)
        meta = run.meta
        if resume:
            _warn_changed_manifests(meta, inputs, reporter)
        meta.update(run_metadata(plan, inputs, precision, strategy_desc))
        meta.setdefault("created", datetime.now().isoformat(timespec="seconds"))
        meta.setdefault("epochs_done", 0)
        meta.setdefault("best", None)
        run.write_meta()
        try:
            return _fit(plan, inputs, run, strategy, reporter, extra_callbacks)
        except KeyboardInterrupt:  # while the data and model were being built
            meta["status"] = "interrupted"
            run.write_meta()
            return _result(run.dir, meta, interrupted=True)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _warn_changed_manifests(meta: dict[str, Any], inputs: Inputs, reporter: Reporter) -> None:
    old = meta.get("manifests", {})
    for name in ("train", "val"):
        before = old.get(name, {}).get("fingerprint")
        if before not in (None, inputs.manifests[name].get("fingerprint")):
            reporter.warn(f"the {name} manifest changed since this run started; resuming anyway")


def _result(run_dir: Path, meta: dict[str, Any], interrupted: bool,
            latest_note: str | None = None) -> TrainResult:
    best = meta.get("best") or {}
    ckpt = run_dir / CHECKPOINT_DIR
    return TrainResult(
        run_dir=run_dir, interrupted=interrupted,
        epochs_done=int(meta.get("epochs_done", 0)),
        epochs_planned=int(meta.get("epochs_planned", 0)),
        best_epoch=best.get("epoch"), best={k: v for k, v in best.items() if k != "epoch"},
        wall_time_s=float(meta.get("wall_time_s", 0.0)),
        keep=str((meta.get("options") or {}).get("keep") or "best"),
        checkpoint=ckpt.is_dir() and any(ckpt.rglob("*")), latest_note=latest_note,
    )


# --------------------------------------------------------------------------- fitting
@dataclass
class _Fit:
    """What every phase of one run shares."""

    plan: TrainPlan
    run: RunFolder
    model: keras.Model
    strategy: tf.distribute.Strategy
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None  # None with --val none
    class_weight: dict[int, float] | None
    steps_per_epoch: int
    progress: EpochProgress
    ctrl_c: CtrlC
    extra: Sequence[keras.callbacks.Callback]

    @property
    def phase1_end(self) -> Path:
        return self.run.dir / CHECKPOINT_DIR / "phase1_end.weights.h5"


def _fit(
    plan: TrainPlan, inputs: Inputs, run: RunFolder, strategy: tf.distribute.Strategy,
    reporter: Reporter, extra: Sequence[keras.callbacks.Callback],
) -> TrainResult:
    opts, recipe = plan.options, plan.recipe
    index = {c: i for i, c in enumerate(inputs.classes)}
    y_train = [index[r.label] for r in inputs.train.records]
    y_val = [index[r.label] for r in inputs.val.records]
    n_train, n_classes = len(y_train), len(inputs.classes)
    with ctrl_c_deferred():  # a Ctrl-C while data and model are built stops after it
        train_ds = build_dataset(
            [str(r.path) for r in inputs.train.records], y_train, opts.img_size, opts.batch,
            training=True, augment=recipe.augment if opts.augment else False, seed=opts.seed,
            n_classes=n_classes,
        )
        val_ds = build_dataset([str(r.path) for r in inputs.val.records], y_val, opts.img_size,
                               opts.batch, n_classes=n_classes) if y_val else None
        pretrained = plan.weights is not None
        reporter.info(
            f"training {opts.backbone} "
            f"({'weights ' + str(run.meta['weights']) if pretrained else 'from scratch'}) on "
            f"{n_train} images, validating on {len(y_val)}; {n_classes} classes, "
            f"{opts.img_size[0]}x{opts.img_size[1]}, batch {opts.batch}, {run.meta['precision']}, "
            f"{run.meta['strategy']}; run: {run.dir}"
        )
        with strategy.scope():
            model = build_model(
                opts.backbone, opts.img_size, n_classes, weights=plan.weights,
                crop_cell=recipe.crop_cell, crop_scale=recipe.crop_scale or None,
                crop_jitter=recipe.crop_jitter, balance=recipe.balance,
                stain_norm=recipe.stain_norm,
                # a from-scratch BatchNorm needs a fast average only when epochs are short
                bn_momentum=0.5 if n_train / opts.batch < 100 else 0.9,
            )
        if plan.weights is not None and plan.weights.startswith(RUN_PREFIX):
            with strategy.scope():
                run.meta["head_from"] = start_head_from(
                    model, Path(plan.weights[len(RUN_PREFIX):]), inputs.classes)
    fit = _Fit(plan, run, model, strategy, train_ds, val_ds,
               class_weight_map(y_train, n_classes, opts.class_weights),
               math.ceil(n_train / opts.batch), EpochProgress(reporter, n_train, opts.batch,
                                                              recipe.epochs), CtrlC(), extra)
    interrupted = _fit_phases(fit, phases_for(recipe.epochs, opts.lr, pretrained))
    _finish(fit, interrupted, reporter)
    return _result(run.dir, run.meta, interrupted, run.latest_note)


def _fit_phases(fit: _Fit, phases: list[Phase]) -> bool:
    """Run the phases not finished yet; True when Ctrl-C stopped them."""
    fit.ctrl_c.install()
    try:
        for phase in phases:
            done = int(fit.run.meta.get("epochs_done", 0))
            if done >= phase.end and (phase.number != 1 or fit.phase1_end.exists()):
                continue  # finished before an interruption
            if _fit_phase(fit, phase):
                break  # early stop
    except KeyboardInterrupt:
        return True
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError) as exc:
        fit.run.meta["status"] = "interrupted"
        fit.run.write_meta()
        raise LeukoError(
            f"another training worker stopped or stopped answering ({first_line(exc, 160)}); "
            f"this worker stopped too: restart the others, then continue every worker with "
            f"`{cmd('train', resume=True, out=fit.run.dir)}`"
        ) from None
    finally:
        fit.ctrl_c.restore()
        fit.progress.close()
    return False


def _compile(fit: _Fit, phase: Phase) -> None:
    recipe = fit.plan.recipe
    if fit.plan.weights is not None:
        set_backbone_trainable(fit.model, phase.backbone_trainable,
                               fit.plan.options.unfreeze if phase.number == 2 else 0)
    with fit.strategy.scope():
        optimizer = make_optimizer(recipe, phase.lr, fit.steps_per_epoch, phase.end - phase.start)
        compile_for_training(fit.model, optimizer, recipe.label_smoothing)
    if phase.number == 2 and fit.phase1_end.exists():
        with warnings.catch_warnings():  # phase 1's optimizer state is not wanted
            warnings.simplefilter("ignore")
            fit.model.load_weights(str(fit.phase1_end))


def _callbacks(fit: _Fit, phase: Phase) -> list[keras.callbacks.Callback]:
    recipe, opts = fit.plan.recipe, fit.plan.options
    # state first, then the summary line: once a user sees "epoch N", epoch N is saved
    callbacks: list[keras.callbacks.Callback] = []
    if isinstance(fit.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        callbacks.append(SyncMovingStatistics(fit.strategy))  # before the model is saved
    callbacks += [
        RunRecorder(fit.run, phase.number, recipe.keep),
        keras.callbacks.BackupAndRestore(
            str(fit.run.dir / CHECKPOINT_DIR / f"phase{phase.number}"), double_checkpoint=True
        ),
        fit.progress,
    ]
    if phase.number != 1 and recipe.schedule == "plateau" and fit.val_ds is not None:
        callbacks += [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.2, patience=max(1, opts.patience // 2),
                min_lr=1e-7, verbose=0,
            ),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=opts.patience,
                restore_best_weights=recipe.keep == "best", verbose=0,
            ),
        ]
    return [*callbacks, *fit.extra, fit.ctrl_c]  # last: an epoch's state is saved first


def _fit_phase(fit: _Fit, phase: Phase) -> bool:
    """One model.fit; True when early stopping ended it before its last epoch."""
    _compile(fit, phase)
    # BackupAndRestore of an earlier phase leaves its restored epoch on the model, and
    # Keras would start this phase's fit there; each phase starts at its own epoch.
    fit.model._initial_epoch = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        fit.model.fit(
            fit.train_ds, validation_data=fit.val_ds, epochs=phase.end,
            initial_epoch=phase.start, class_weight=fit.class_weight,
            callbacks=_callbacks(fit, phase), verbose=0,
        )
    if phase.number == 1:
        fit.phase1_end.parent.mkdir(parents=True, exist_ok=True)
        fit.model.save_weights(str(fit.phase1_end))
    return bool(fit.model.stop_training) and int(fit.run.meta.get("epochs_done", 0)) < phase.end


def _finish(fit: _Fit, interrupted: bool, reporter: Reporter) -> None:
    run = fit.run
    if interrupted:
        run.meta["status"] = "interrupted"
        run.write_meta()
    else:
        run.meta["status"] = "finished"
        if run.meta.get("best") is None:
            run.save_model(fit.model)  # no finite val_loss ever: keep the last model
        run.write_meta()  # finished before the twin: a Ctrl-C during it loses no run
        run.write_twin()
        fit.phase1_end.unlink(missing_ok=True)
        try:
            (run.dir / CHECKPOINT_DIR).rmdir()
        except OSError:
            pass
    if run.history_path.exists():
        try:
            plot_curves(run.history_path, run.dir / CURVES_FILE,
                        title=f"{run.meta['backbone']} — {run.dir.name}")
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a trained run
            reporter.warn(f"could not draw {CURVES_FILE}: {exc}")
