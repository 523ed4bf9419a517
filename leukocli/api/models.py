"""Using a model: `evaluate`, `load_model`, `predict`, `export` and `explain`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, check_batch
from ..evaluation import INFER_BATCH
from ._common import DEFAULT_MODEL, PathLike, Paths, as_list, map_items

if TYPE_CHECKING:
    import pandas as pd

    from ..evaluation.evaluate import Evaluation
    from ..modeling.bundle import Bundle


def evaluate(data: PathLike, *, model: PathLike = DEFAULT_MODEL, tta: int = 1,
             all_classes: bool = False, out: PathLike | None = None, batch: int = INFER_BATCH,
             group_by: str | None = None, mapping: Mapping[str, str] | None = None,
             ignore_unknown: bool = False, runtime: str = "auto",
             reporter: Reporter = SILENT) -> Evaluation:
    """Evaluate a model on labelled data: accuracy with CI, per-class report, confusion.

    Args:
        data: CSV manifest or class folder.
        model: run folder, runs/latest, cv run, .keras file, exported artefact, or a
            shipped model's name (e.g. "wbc").
        tta: test-time views averaged (1 = off).
        all_classes: let every class of the model compete, not only the data's.
        out: also write metrics.json, predictions.csv and confusion.png here (only then).
        mapping: {OLD: NEW} renames of the data's classes into the model's.
        runtime: "auto" (the run's TensorFlow-free twin when it is fresh, else Keras,
            the reason sent to `reporter`) or "keras".
    Returns:
        Evaluation: `.metrics` (metrics.json's dict; n_unreadable counts images left
        out), `.probs` aligned with `.records`, `.classes` scored.
    Raises:
        LeukoError: no model, missing data, classes the model lacks, bad options.
    """
    from .._util.files import ensure_writable_dir
    from ..curation.groups import check_group_spec
    from ..evaluation.evaluate import evaluate as run_evaluate
    from ..evaluation.evaluate import write_outputs
    from ..modeling.augment import check_tta
    from ..modeling.bundle import resolve_run_dir
    from ..modeling.twin import check_runtime

    check_batch(batch)
    check_tta(tta)
    check_runtime(runtime)
    if group_by is not None:
        check_group_spec(group_by)
    data_path = Path(data)
    if not data_path.exists():
        raise LeukoError(f"{data_path}: no such file or directory")
    model_path = resolve_run_dir(Path(model))  # fail fast when there is no model at all
    if out is not None:
        ensure_writable_dir(Path(out))  # before the work, not after it
    items = list(map_items(mapping))
    ev = run_evaluate(data_path, Path(model), batch, group_by, items, ignore_unknown, tta,
                      reporter=reporter, all_classes=all_classes, runtime=runtime)
    ev.metrics.update({"data": str(data_path.resolve()), "model": str(model_path),
                       "mapping": items, "tta": tta > 1, "tta_views": tta})
    if out is not None:
        title = (f"{data_path.name}: accuracy {100 * ev.metrics['accuracy']:.1f}% "
                 f"(n={ev.metrics['n']})")
        write_outputs(ev, Path(out), None, title)
    return ev


def load_model(path: PathLike = DEFAULT_MODEL, *, runtime: str = "keras",
               reporter: Reporter = SILENT) -> Bundle:
    """Load a run, runs/latest, cv ensemble, .keras file, exported artefact or shipped model.

    Args:
        runtime: "keras" (what `explain` needs), or "auto": the run's TensorFlow-free
            twin when it is fresh (no TensorFlow import), else Keras, the reason sent to
            `reporter`.
    Returns:
        Bundle: `.model` (raw 0-255 RGB batches in, softmax out), `.classes`, `.img_size`,
        `.meta`; pass it to `predict(model=...)` to load once and predict many times.
    Raises:
        LeukoError: nothing there, or not a leuko model.
    """
    from ..modeling.bundle import load_bundle, resolve_run_dir

    resolve_run_dir(Path(path))
    return load_bundle(Path(path), runtime, reporter)


def predict(paths: Paths, *, model: PathLike | Bundle = DEFAULT_MODEL, tta: int = 1,
            batch: int = INFER_BATCH, runtime: str = "auto",
            reporter: Reporter = SILENT) -> pd.DataFrame:
    """Classify image files, folders and globs.

    Args:
        paths: one or several files, folders or globs.
        model: what `load_model` takes, or a Bundle it returned (loaded once).
        runtime: "auto" (the run's TensorFlow-free twin when it is fresh) or "keras".
    Returns:
        One row per image, in input order: path, predicted, confidence, prob_<CLASS> per
        class of the model, and error (None; for an unreadable file its reason, with
        predicted None and NaN figures, listed after the others).
    Raises:
        LeukoError: no images at all, no model, bad tta or batch.
    """
    import pandas as pd

    from ..evaluation.predict import collect_images, predict_paths
    from ..modeling.augment import check_tta
    from ..modeling.bundle import Bundle, resolve_run_dir
    from ..modeling.twin import check_runtime

    check_batch(batch)
    check_tta(tta)
    check_runtime(runtime)
    items = as_list(paths)
    if not items:
        raise LeukoError("give at least one image file, folder or glob")
    if isinstance(model, Bundle):
        bundle, collected = model, collect_images(items)
    else:
        resolve_run_dir(Path(model))  # fail fast, before scanning, when there is no model
        collected = collect_images(items)
        bundle = load_model(model, runtime=runtime, reporter=reporter)
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
    from ..modeling.bundle import resolve_run_dir
    from ..modeling.export import check_export_options

    check_export_options(format, quantize)
    resolve_run_dir(Path(model))  # fail fast, before TensorFlow loads
    from ..modeling.export import export_run

    return export_run(Path(model), format, quantize, None if out is None else Path(out))


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

    from .._util.files import ensure_writable_dir
    from ..data.images import check_images
    from ..evaluation.explain import explain_files
    from ..evaluation.predict import collect_images
    from ..modeling.bundle import resolve_run_dir

    resolve_run_dir(Path(model))
    ensure_writable_dir(Path(out))
    files, errors = collect_images(as_list(paths))
    reasons = check_images(files, "decode", "checking images", reporter)
    good = [p for p, r in zip(files, reasons, strict=True) if r is None]
    errors += [(str(p), r) for p, r in zip(files, reasons, strict=True) if r is not None]
    rows = explain_files(load_model(model), good, Path(out), class_name,
                         reporter=reporter) if good else []
    rows = [{**r, "error": None} for r in rows] + [{"path": p, "error": e} for p, e in errors]
    return pd.DataFrame(rows, columns=["path", "predicted", "probability", "explained",
                                       "gradcam", "peak_yx", "error"])

