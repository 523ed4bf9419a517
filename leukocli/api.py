"""leuko as a Python library: one function per command, silent, returning values.

Each function does what its command does, through the same core functions and checks
(the CLI modules add only rendering). Nothing is printed: progress and notes go to
`reporter` (silent by default; `leukocli._util.progress.Collecting` keeps them). What
the user can fix raises `leukocli.errors.LeukoError`; partial outcomes (unreadable
images) are part of the returned value, not an exception. TensorFlow loads only inside
the functions that build or run a model. Typed imports: `from leukocli.api import train`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._util.progress import SILENT, Reporter
from .errors import Interrupted, LeukoError, check_batch
from .evaluation import INFER_BATCH
from .training.options import NO_VAL, TrainOptions, resolve

if TYPE_CHECKING:
    import pandas as pd

    from .curation.dedupe import Findings
    from .evaluation.evaluate import Evaluation
    from .modeling.bundle import Bundle
    from .training.loop import TrainResult

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike]
DEFAULT_MODEL = "runs/latest"
EXCLUDE_FILE = "dedupe.json"  # where split keeps in-memory Findings it was given
_D = TrainOptions()  # the one place training defaults live

__all__ = ["cross_validate", "dedupe", "evaluate", "explain", "export", "load_model",
           "predict", "split", "train"]


def _as_list(paths: Paths) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _map_items(mapping: Mapping[str, str] | None) -> tuple[str, ...]:
    """A {OLD: NEW} dict as the OLD=NEW items the core's --map parser checks."""
    return tuple(f"{old}={new}" for old, new in (mapping or {}).items())


def dedupe(data: PathLike, *, threshold: int = 10, transforms: bool = True,
           report: PathLike | None = None, reporter: Reporter = SILENT) -> Findings:
    """Find exact and near-duplicate images, label conflicts and name collisions.

    Reads only, as `leuko dedupe` without --apply: moving files stays a deliberate step.

    Args:
        data: dataset folder (DIR/<CLASS>/*.jpg) or CSV manifest.
        threshold: Hamming distance (of 64 bits) for near-duplicate candidates.
        transforms: also match flipped and quarter-turned copies.
        report: also write the findings as JSON here (a file `split(exclude=)` takes).
    Returns:
        Findings: `.groups`, `.to_quarantine`, `.summary()`, `.to_dict()`.
    Raises:
        LeukoError: a missing path, a bad layout or threshold.
    """
    from ._util.files import atomic_write_json, ensure_writable_dir
    from .curation.dedupe import find_duplicates

    if report is not None:  # checked before the scan, not after it
        ensure_writable_dir(Path(report).parent, "--report")
    findings = find_duplicates(Path(data), threshold=threshold, transforms=transforms,
                               reporter=reporter)
    if report is not None:
        atomic_write_json(Path(report), findings.to_dict())
    return findings


def _exclude_file(exclude: PathLike | Findings | None, out: Path, force: bool) -> Path | None:
    """A dedupe report path for the core: in-memory Findings are written to OUT/dedupe.json
    (the core reads --exclude from a file, and split.json names it, so it has to last)."""
    from .curation.dedupe import Findings

    if not isinstance(exclude, Findings):
        return None if exclude is None else Path(exclude)
    from ._util.files import atomic_write_json
    from .curation.groups import load_exclusions
    from .curation.split import check_out

    target = check_out(out, force) / EXCLUDE_FILE
    try:  # an earlier dedupe report (leuko's own) is replaced, anything else is kept
        if target.exists():
            load_exclusions(target)
    except LeukoError:
        raise LeukoError(f"{target} is not a dedupe report; leuko does not replace it") from None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, exclude.to_dict())
    return target


def split(data: PathLike, *, out: PathLike = "splits", val: float = 0.2, test: float = 0.0,
          seed: int = 42, group_by: str = "auto", exclude: PathLike | Findings | None = None,
          force: bool = False, reporter: Reporter = SILENT) -> dict[str, Any]:
    """Split into stratified, group-aware train/val(/test) CSV manifests in `out`.

    Args:
        val, test: fractions of each class (by whole groups); test=0 writes no test.csv.
        group_by: auto (rediscover augmented siblings), none, column:NAME, pattern:REGEX;
            a group never straddles two splits.
        exclude: dedupe's Findings or its report JSON: drop what it would quarantine.
            Findings are saved as OUT/dedupe.json first, so split.json names a real file.
        force: overwrite a split already in `out`.
    Returns:
        The summary written to split.json (params, classes, per-split counts, warnings).
    Raises:
        LeukoError: bad fractions or group spec, an existing split, nothing left to split.
    """
    from .curation.groups import check_group_spec
    from .curation.split import check_fractions, run_split

    check_fractions(val, test)  # before anything is written for in-memory Findings
    check_group_spec(group_by)
    target = Path(out)
    return run_split(Path(data), target, val=val, test=test, seed=seed, group_by=group_by,
                     exclude=_exclude_file(exclude, target, force), force=force,
                     reporter=reporter)


def _options(train: PathLike, val: PathLike, mapping: Mapping[str, str] | None,
             **fields: Any) -> TrainOptions:
    """TrainOptions as the command line builds them: paths absolute, `val` may be "none"."""
    def absolute(p: PathLike) -> str:
        return str(Path(p).expanduser().absolute())

    if "img_size" in fields:
        fields["img_size"] = tuple(fields["img_size"])
    no_val = str(val).strip().lower() == NO_VAL
    return TrainOptions(train_csv=absolute(train), val_csv=NO_VAL if no_val else absolute(val),
                        mapping=_map_items(mapping), **fields)


def train(train: PathLike, val: PathLike, *, out: PathLike | None = None,
          img_size: tuple[int, int] = _D.img_size, batch: int = _D.batch,
          backbone: str = _D.backbone, weights: str = _D.weights, recipe: str = _D.recipe,
          epochs: int | None = _D.epochs, lr: float = _D.lr, crop_cell: int | None = None,
          crop_scale: float | None = None, label_smoothing: float | None = None,
          keep: str | None = None, augment: bool = _D.augment, unfreeze: int = _D.unfreeze,
          class_weights: str = _D.class_weights, patience: int = _D.patience,
          precision: str = _D.precision, strategy: str = _D.strategy, seed: int = _D.seed,
          mapping: Mapping[str, str] | None = None, resume: bool = False,
          reporter: Reporter = SILENT) -> TrainResult:
    """Train a classifier into a run folder (model.keras, leuko.json, history.csv, curves).

    The options are `leuko train`'s (None = the recipe's choice), all checked before
    TensorFlow loads; runs/latest beside the run points at it once it has a model.

    Args:
        train, val: manifests or class folders; val="none": no validation, a fixed
            schedule and the last epoch kept.
        out: the run folder (default runs/<timestamp>-<backbone>).
        mapping: {OLD: NEW} renames of the training data's classes (--map OLD=NEW).
        resume: continue the interrupted run in `out` (or runs/latest), its options kept.
    Returns:
        TrainResult: run_dir, epochs_done, best_epoch and best (loss, accuracy, ...).
    Raises:
        LeukoError: a bad option or dataset, a run already in `out`; Interrupted on
        Ctrl-C (the finished epochs are kept: resume=True goes on).
    """
    opts = _options(train, val, mapping, img_size=img_size, batch=batch, epochs=epochs,
                    lr=lr, backbone=backbone, weights=weights, unfreeze=unfreeze,
                    augment=augment, class_weights=class_weights, patience=patience,
                    precision=precision, strategy=strategy, seed=seed, recipe=recipe,
                    crop_cell=crop_cell, crop_scale=crop_scale,
                    label_smoothing=label_smoothing, keep=keep)
    if not resume:
        resolve(opts)  # every option checked before TensorFlow loads
    from .training.loop import train as train_run

    result = train_run(opts, out=None if out is None else Path(out), resume=resume,
                       reporter=reporter)
    if result.interrupted:
        raise Interrupted(f"training of {result.run_dir} interrupted after "
                          f"{result.epochs_done} of {result.epochs_planned} epochs; continue "
                          f"with train(..., out={str(result.run_dir)!r}, resume=True)")
    return result


def evaluate(data: PathLike, *, model: PathLike = DEFAULT_MODEL, tta: int = 1,
             all_classes: bool = False, out: PathLike | None = None, batch: int = INFER_BATCH,
             group_by: str | None = None, mapping: Mapping[str, str] | None = None,
             ignore_unknown: bool = False, reporter: Reporter = SILENT) -> Evaluation:
    """Evaluate a model on labelled data: accuracy with CI, per-class report, confusion.

    Args:
        data: CSV manifest or class folder.
        model: run folder, runs/latest, cv run, .keras file, exported artefact, or a
            shipped model's name (e.g. "wbc").
        tta: test-time views averaged (1 = off).
        all_classes: let every class of the model compete, not only the data's.
        out: also write metrics.json, predictions.csv and confusion.png here (only then).
        mapping: {OLD: NEW} renames of the data's classes into the model's.
    Returns:
        Evaluation: `.metrics` (metrics.json's dict; n_unreadable counts images left
        out), `.probs` aligned with `.records`, `.classes` scored.
    Raises:
        LeukoError: no model, missing data, classes the model lacks, bad options.
    """
    from ._util.files import ensure_writable_dir
    from .curation.groups import check_group_spec
    from .evaluation.evaluate import evaluate as run_evaluate
    from .evaluation.evaluate import write_outputs
    from .modeling.augment import check_tta
    from .modeling.bundle import resolve_run_dir

    check_batch(batch)
    check_tta(tta)
    if group_by is not None:
        check_group_spec(group_by)
    data_path = Path(data)
    if not data_path.exists():
        raise LeukoError(f"{data_path}: no such file or directory")
    model_path = resolve_run_dir(Path(model))  # fail fast when there is no model at all
    if out is not None:
        ensure_writable_dir(Path(out))  # before the work, not after it
    items = list(_map_items(mapping))
    ev = run_evaluate(data_path, Path(model), batch, group_by, items, ignore_unknown, tta,
                      reporter=reporter, all_classes=all_classes)
    ev.metrics.update({"data": str(data_path.resolve()), "model": str(model_path),
                       "mapping": items, "tta": tta > 1, "tta_views": tta})
    if out is not None:
        title = (f"{data_path.name}: accuracy {100 * ev.metrics['accuracy']:.1f}% "
                 f"(n={ev.metrics['n']})")
        write_outputs(ev, Path(out), None, title)
    return ev


def load_model(path: PathLike = DEFAULT_MODEL) -> Bundle:
    """Load a run, runs/latest, cv ensemble, .keras file, exported artefact or shipped model.

    Returns:
        Bundle: `.model` (raw 0-255 RGB batches in, softmax out), `.classes`, `.img_size`,
        `.meta`; pass it to `predict(model=...)` to load once and predict many times.
    Raises:
        LeukoError: nothing there, or not a leuko model.
    """
    from .modeling.bundle import load_bundle, resolve_run_dir

    resolve_run_dir(Path(path))
    return load_bundle(Path(path))


def predict(paths: Paths, *, model: PathLike | Bundle = DEFAULT_MODEL, tta: int = 1,
            batch: int = INFER_BATCH, reporter: Reporter = SILENT) -> pd.DataFrame:
    """Classify image files, folders and globs.

    Args:
        paths: one or several files, folders or globs.
        model: what `load_model` takes, or a Bundle it returned (loaded once).
    Returns:
        One row per image, in input order: path, predicted, confidence, prob_<CLASS> per
        class of the model, and error (None; for an unreadable file its reason, with
        predicted None and NaN figures, listed after the others).
    Raises:
        LeukoError: no images at all, no model, bad tta or batch.
    """
    import pandas as pd

    from .evaluation.predict import collect_images, predict_paths
    from .modeling.augment import check_tta
    from .modeling.bundle import Bundle, resolve_run_dir

    check_batch(batch)
    check_tta(tta)
    items = _as_list(paths)
    if not items:
        raise LeukoError("give at least one image file, folder or glob")
    if isinstance(model, Bundle):
        bundle, collected = model, collect_images(items)
    else:
        resolve_run_dir(Path(model))  # fail fast, before scanning, when there is no model
        collected = collect_images(items)
        bundle = load_model(model)
    result = predict_paths(items, bundle, batch, collected=collected, tta=tta,
                           reporter=reporter)
    probs = [f"prob_{c}" for c in result.classes]
    rows = [{"path": p.path, "predicted": result.classes[int(p.probs.argmax())],
             "confidence": float(p.probs.max()), "error": None,
             **dict(zip(probs, map(float, p.probs), strict=True))} for p in result.predictions]
    rows += [{"path": path, "predicted": None, "error": why} for path, why in result.errors]
    return pd.DataFrame(rows, columns=["path", "predicted", "confidence", *probs, "error"])


def export(model: PathLike = DEFAULT_MODEL, *, format: str = "onnx",
           quantize: str = "none", out: PathLike | None = None) -> dict[str, Any]:
    """Export a run for deployment, with a card (ARTEFACT.leuko.json) beside it.

    Args:
        format: savedmodel, onnx or litert; .onnx and .tflite run without TensorFlow
            (`predict(model=artefact)`), with the extras leukocli[onnx] / [litert].
        quantize: none, float16 or dynamic-int8 (onnx and litert only).
        out: the artefact (default RUN/export/model.onnx, .tflite or a SavedModel folder).
    Returns:
        The card: format, quantize, classes, img_size, input, output, source, path.
    Raises:
        LeukoError: bad options, no model, an existing `out`, a missing export extra.
    """
    from .modeling.bundle import resolve_run_dir
    from .modeling.export import check_export_options

    check_export_options(format, quantize)
    resolve_run_dir(Path(model))  # fail fast, before TensorFlow loads
    from .modeling.export import export_run

    return export_run(Path(model), format, quantize, None if out is None else Path(out))


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
        options: `train`'s training options (img_size, backbone, epochs, crop_cell, ...).
    Returns:
        The out-of-fold metrics saved in cv.json (with per-fold spread under "folds"),
        or None while folds are missing (only `fold` was trained).
    Raises:
        LeukoError: bad options, another plan in `out`. Interrupted: Ctrl-C.
    """
    from datetime import datetime

    from .curation.folds import check_folds
    from .curation.groups import check_group_spec
    from .modeling.augment import check_tta
    from .training import cv

    check_folds(folds, fold)
    check_tta(tta)
    if data is None:
        if out is None or not (Path(out) / cv.CV_FILE).exists():
            raise LeukoError("give a dataset folder or CSV manifest (or out= a cv run)")
        run, plan = Path(out), cv.load_plan(Path(out))
    else:
        if not Path(data).exists():
            raise LeukoError(f"{data}: no such file or directory")
        check_group_spec(group_by)
        opts = cv.plan_options(_options(_D.train_csv, _D.val_csv, mapping, **options), reporter)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run = Path(out) if out is not None else Path("runs") / f"cv-{stamp}-{opts.backbone}"
        plan = cv.CVPlan(str(Path(data).expanduser().resolve()), folds, group_by,
                         str(Path(exclude).expanduser().resolve()) if exclude else None, tta,
                         opts)
    cv.prepare(run, plan, reporter)
    cv.train_folds(run, plan, [fold] if fold is not None else list(range(plan.folds)), reporter)
    if fold is not None or cv.missing_folds(run, plan):
        return None
    return cv.collect(run, reporter)


def explain(paths: Paths, *, model: PathLike = DEFAULT_MODEL, out: PathLike = "explain",
            class_name: str | None = None, reporter: Reporter = SILENT) -> pd.DataFrame:
    """Grad-CAM heatmaps: each image beside where the model looked, as a PNG in `out`.

    Args:
        class_name: explain this class instead of the predicted one.
    Returns:
        One row per image: path, predicted, probability, explained, gradcam (the PNG),
        peak_yx; unreadable files follow with their reason in error.
    Raises:
        LeukoError: no images, no model (or an exported one: it has no gradients).
    """
    import pandas as pd

    from ._util.files import ensure_writable_dir
    from .data.images import check_images
    from .evaluation.explain import explain_files
    from .evaluation.predict import collect_images
    from .modeling.bundle import resolve_run_dir

    resolve_run_dir(Path(model))
    ensure_writable_dir(Path(out))
    files, errors = collect_images(_as_list(paths))
    reasons = check_images(files, "decode", "checking images", reporter)
    good = [p for p, r in zip(files, reasons, strict=True) if r is None]
    errors += [(str(p), r) for p, r in zip(files, reasons, strict=True) if r is not None]
    rows = explain_files(load_model(model), good, Path(out), class_name,
                         reporter=reporter) if good else []
    rows = [{**r, "error": None} for r in rows] + [{"path": p, "error": e} for p, e in errors]
    return pd.DataFrame(rows, columns=["path", "predicted", "probability", "explained",
                                       "gradcam", "peak_yx", "error"])

