"""Honest metric reports for a saved run on a labelled dataset.

Classes, image size and preprocessing come from the run's metadata, never from flags.
Besides the per-image metrics it reports accuracy per source cell (group), because
augmented siblings of one photo are not independent test cases.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._util.files import atomic_write_json, atomic_write_text, ensure_writable_dir
from .._util.progress import SILENT, Reporter, spoken
from ..data.dataset import Dataset, Record, parse_renames, scan
from ..errors import LeukoError, ParameterError, cmd, opt
from ..modeling.bundle import Bundle, ensemble_members, load_bundle, read_meta
from . import INFER_BATCH
from .metrics import classification_metrics
from .predict import predict_probs

DEFAULT_DATA = (Path("splits/test.csv"), Path("splits/val.csv"))


def default_data() -> Path:
    """splits/test.csv when present, else splits/val.csv."""
    for p in DEFAULT_DATA:
        if p.exists():
            return p
    raise LeukoError(
        "no DATA given and neither splits/test.csv nor splits/val.csv exists: "
        f"run `{cmd('split', 'DIR')}` first, or pass a CSV manifest or class folder"
    )


def parse_mapping(items: Sequence[str], classes: Sequence[str]) -> dict[str, str]:
    """--map OLD=NEW items into a dict; NEW must be one of the model's classes."""
    mapping = parse_renames(items)
    for old, new in mapping.items():
        if new not in classes:
            raise ParameterError(
                "mapping", f"{opt('mapping', f'{old}={new}')}: {new!r} is not a class of the model "
                f"(model classes: {', '.join(classes)})"
            )
    return mapping


def unknown_class_message(unknown: Sequence[str], classes: Sequence[str]) -> str:
    """One line naming the unknown classes and the exact flags that would fix them."""
    by_lower = {c.lower(): c for c in classes}
    hints = [opt("mapping", f"{u}={by_lower[u.lower()]}") for u in unknown if u.lower() in by_lower]
    shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
    msg = (
        f"the data has classes the model does not know: {shown} "
        f"(model classes: {', '.join(classes)}); "
    )
    if hints:
        msg += f"rename them with {' '.join(hints)}"
        if len(hints) < len(unknown):
            msg += f", and skip the rest with {opt('ignore_unknown', True)}"
    else:
        msg += (f"rename them with {opt('mapping', 'OLD=NEW')} or skip them with "
                f"{opt('ignore_unknown', True)}")
    return msg


def select_records(
    ds: Dataset,
    classes: Sequence[str],
    mapping: dict[str, str],
    ignore_unknown: bool,
    reporter: Reporter = SILENT,
) -> tuple[list[int], list[str]]:
    """Indices of the records to evaluate and their (mapped) labels."""
    for old in mapping:
        if old not in ds.classes:
            reporter.warn(spoken(reporter, f"{opt('mapping', f'{old}={mapping[old]}')}: the data "
                                          f"has no class {old!r}"))
    known = set(classes)
    # a class named in another case is that class (PBC's folders are lower case)
    by_lower: dict[str, list[str]] = {}
    for c in classes:
        by_lower.setdefault(c.lower(), []).append(c)
    same = {c: by_lower[c.lower()][0] for c in ds.classes
            if c not in known and c not in mapping and len(by_lower.get(c.lower(), [])) == 1}
    mapping = {**same, **mapping}
    labels = [mapping.get(r.label, r.label) for r in ds.records]
    unknown = sorted({lab for lab in labels if lab not in known})
    if unknown and not ignore_unknown:
        raise LeukoError(unknown_class_message(unknown, classes))
    keep = [i for i, lab in enumerate(labels) if lab in known]
    if unknown:
        skipped = len(labels) - len(keep)
        reporter.warn(
            f"skipping {skipped} images of classes the model does not know: {', '.join(unknown)}"
        )
    if not keep:
        raise LeukoError("no images left to evaluate after skipping unknown classes")
    return keep, [labels[i] for i in keep]


def _groups_for(
    ds: Dataset, group_by: str | None, reporter: Reporter
) -> list[str | None] | None:
    if group_by is None or group_by.strip().lower() == "none":
        if group_by is None and ds.has_groups:
            return [r.group for r in ds.records]
        return None
    from ..curation.groups import resolve_groups

    groups = resolve_groups(ds, group_by, reporter)
    if len(groups) != len(ds.records):
        raise ParameterError("group_by", f"{opt('group_by', group_by)} gave {len(groups)} groups "
                                         f"for {len(ds)} images")
    return [str(g) for g in groups]


@dataclass
class Evaluation:
    """Everything one evaluation produced, aligned image by image."""

    metrics: dict[str, Any]
    records: list[Record]
    labels: list[str]
    probs: np.ndarray
    groups: list[str | None] | None
    bundle: Bundle
    classes: list[str]  # the classes scored: the model's, or the data's among them


def evaluate(
    data: Path,
    model: Path,
    batch: int = INFER_BATCH,
    group_by: str | None = None,
    mapping: Sequence[str] = (),
    ignore_unknown: bool = False,
    tta: int = 1,
    reporter: Reporter = SILENT,
    all_classes: bool = False,
    runtime: str = "keras",
) -> Evaluation:
    """Scan `data`, check its classes against the model's, predict, compute all metrics.

    Class mistakes are caught from the run's metadata before the model is loaded, so
    they cost no TensorFlow start-up. When the data holds only some of the model's
    classes (4 cell types for an 8-class model), the model chooses among those, as a
    lab's 4-class differential would (`all_classes` lets every class compete).
    `runtime` "auto" answers through the run's fresh TensorFlow-free twin (load_bundle).
    """
    ds = scan(data, check="decode", reporter=reporter)
    if ds.problems:
        reporter.warn(
            f"{len(ds.problems)} unusable files in {data} left out "
            f"(e.g. {ds.problems[0].rel}: {ds.problems[0].reason})"
        )
    classes = [str(c) for c in read_meta(model)["classes"]]
    keep, labels = select_records(
        ds, classes, parse_mapping(mapping, classes), ignore_unknown, reporter
    )
    all_groups = _groups_for(ds, group_by, reporter)
    records = [ds.records[i] for i in keep]
    groups = [all_groups[i] for i in keep] if all_groups is not None else None
    bundle = load_bundle(model, runtime, reporter)
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[lab] for lab in labels], dtype=int)
    probs = predict_probs(
        bundle, [r.path for r in records], batch, "evaluating", tta=tta, reporter=reporter
    )
    scored = [c for c in classes if c in set(labels)]
    if not all_classes and 2 <= len(scored) < len(classes):
        reporter.info(f"scoring among the data's {len(scored)} classes of the model's "
                      f"{len(classes)} ({', '.join(scored)})")
        cols = [index[c] for c in scored]
        probs = probs[:, cols] / np.maximum(probs[:, cols].sum(axis=1, keepdims=True), 1e-12)
        index = {c: i for i, c in enumerate(scored)}
        y_true = np.array([index[lab] for lab in labels], dtype=int)
        classes = scored
    metrics = classification_metrics(probs, y_true, classes, groups)
    metrics["classes_scored"] = list(classes)
    metrics["n_unreadable"] = len(ds.problems)
    metrics["n_skipped_unknown"] = len(ds.records) - len(keep)
    return Evaluation(metrics, records, labels, probs, groups, bundle, list(classes))


def write_predictions(
    path: Path,
    records: Sequence[Record],
    labels: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    groups: Sequence[str | None] | None,
) -> None:
    """predictions.csv: one row per image, so misclassified images can be opened."""
    fh = io.StringIO()
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(
        ["path", "label", "predicted", "confidence", "correct", "group"]
        + [f"prob_{c}" for c in classes]
    )
    for i, r in enumerate(records):
        j = int(np.argmax(probs[i]))
        g = groups[i] if groups is not None else None
        w.writerow(
            [str(r.path), labels[i], classes[j], f"{float(probs[i, j]):.6f}",
             int(classes[j] == labels[i]), "" if g is None else g]
            + [f"{float(v):.6f}" for v in probs[i]]
        )
    atomic_write_text(path, fh.getvalue())


def output_dir(model: Path, bundle_run_dir: Path | None, out: Path | None) -> Path:
    """Where evaluate writes: --out, else the run directory (its evaluate/ folder for a cv
    ensemble, whose confusion.png is the out-of-fold one), else beside the model file."""
    from ..modeling.shipped import is_shipped

    if out is not None:
        return Path(out)
    if is_shipped(bundle_run_dir):  # never into the installed package: here, by name
        return Path(f"{Path(str(bundle_run_dir)).name}-evaluate")
    if bundle_run_dir is not None:
        is_ensemble = ensemble_members(bundle_run_dir) is not None
        return bundle_run_dir / "evaluate" if is_ensemble else bundle_run_dir
    return model.parent if model.is_file() else model


def write_outputs(ev: Evaluation, out_dir: Path, json_path: Path | None, title: str) -> list[Path]:
    """metrics.json, predictions.csv and confusion.png in out_dir (and --json); the paths."""
    from .plots import plot_confusion

    ensure_writable_dir(out_dir)
    written = [out_dir / "metrics.json", out_dir / "predictions.csv", out_dir / "confusion.png"]
    atomic_write_json(written[0], ev.metrics)
    if json_path is not None:
        ensure_writable_dir(Path(json_path).parent, "json")
        atomic_write_json(Path(json_path), ev.metrics)
        written.append(Path(json_path))
    write_predictions(written[1], ev.records, ev.labels, ev.probs, ev.classes, ev.groups)
    plot_confusion(ev.metrics["confusion_matrix"], ev.classes, written[2], title=title)
    return written
