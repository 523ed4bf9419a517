"""`leuko evaluate`: honest metric reports for a saved run on a labelled dataset.

Classes, image size and preprocessing come from the run's metadata, never from flags.
Besides the per-image metrics it reports accuracy per source cell (group), because
augmented siblings of one photo are not independent test cases.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle, load_bundle, read_meta, resolve_run_dir
from .console import console, info, warn
from .dataset import Dataset, Record, scan
from .errors import LeukoError
from .metrics import classification_metrics, row_percent
from .predict import check_tta, predict_probs

DEFAULT_DATA = (Path("splits/test.csv"), Path("splits/val.csv"))


def default_data() -> Path:
    """splits/test.csv when present, else splits/val.csv."""
    for p in DEFAULT_DATA:
        if p.exists():
            return p
    raise LeukoError(
        "no DATA given and neither splits/test.csv nor splits/val.csv exists: "
        "run `leuko split DIR` first, or pass a CSV manifest or class folder"
    )


def parse_mapping(items: Sequence[str], classes: Sequence[str]) -> dict[str, str]:
    """--map OLD=NEW items into a dict; NEW must be one of the model's classes."""
    mapping: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise LeukoError(f"--map expects OLD=NEW (got {item!r})")
        if new not in classes:
            raise LeukoError(
                f"--map {item}: {new!r} is not a class of the model "
                f"(model classes: {', '.join(classes)})"
            )
        if old in mapping and mapping[old] != new:
            raise LeukoError(f"--map gives {old!r} two targets: {mapping[old]} and {new}")
        mapping[old] = new
    return mapping


def unknown_class_message(unknown: Sequence[str], classes: Sequence[str]) -> str:
    """One line naming the unknown classes and the exact flags that would fix them."""
    by_lower = {c.lower(): c for c in classes}
    hints = [f"--map {u}={by_lower[u.lower()]}" for u in unknown if u.lower() in by_lower]
    shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
    msg = (
        f"the data has classes the model does not know: {shown} "
        f"(model classes: {', '.join(classes)}); "
    )
    if hints:
        msg += f"rename them with {' '.join(hints)}"
        if len(hints) < len(unknown):
            msg += ", and skip the rest with --ignore-unknown"
    else:
        msg += "rename them with --map OLD=NEW or skip them with --ignore-unknown"
    return msg


def select_records(
    ds: Dataset,
    classes: Sequence[str],
    mapping: dict[str, str],
    ignore_unknown: bool,
) -> tuple[list[int], list[str]]:
    """Indices of the records to evaluate and their (mapped) labels."""
    for old in mapping:
        if old not in ds.classes:
            warn(f"--map {old}={mapping[old]}: the data has no class {old!r}")
    known = set(classes)
    labels = [mapping.get(r.label, r.label) for r in ds.records]
    unknown = sorted({lab for lab in labels if lab not in known})
    if unknown and not ignore_unknown:
        raise LeukoError(unknown_class_message(unknown, classes))
    keep = [i for i, lab in enumerate(labels) if lab in known]
    if unknown:
        skipped = len(labels) - len(keep)
        warn(f"skipping {skipped} images of classes the model does not know: {', '.join(unknown)}")
    if not keep:
        raise LeukoError("no images left to evaluate after skipping unknown classes")
    return keep, [labels[i] for i in keep]


def _groups_for(ds: Dataset, group_by: str | None) -> list[str | None] | None:
    if group_by is None or group_by.strip().lower() == "none":
        if group_by is None and ds.has_groups:
            return [r.group for r in ds.records]
        return None
    from .split import resolve_groups

    groups = resolve_groups(ds, group_by)
    if len(groups) != len(ds.records):
        raise LeukoError(f"--group-by {group_by} gave {len(groups)} groups for {len(ds)} images")
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


def evaluate(
    data: Path,
    model: Path,
    batch: int = 64,
    group_by: str | None = None,
    mapping: Sequence[str] = (),
    ignore_unknown: bool = False,
    tta: int = 1,
) -> Evaluation:
    """Scan `data`, check its classes against the model's, predict, compute all metrics.

    Class mistakes are caught from the run's metadata before the model is loaded, so
    they cost no TensorFlow start-up.
    """
    ds = scan(data, check="decode")
    if ds.problems:
        warn(
            f"{len(ds.problems)} unusable files in {data} left out "
            f"(e.g. {ds.problems[0].rel}: {ds.problems[0].reason})"
        )
    if not ds.records:
        raise LeukoError(f"{data} holds no readable images")
    meta_classes = read_meta(model).get("classes")
    bundle: Bundle | None = None
    if meta_classes:
        classes = [str(c) for c in meta_classes]
    else:  # a bare .keras file: only the model itself knows its classes
        bundle = load_bundle(model)
        classes = list(bundle.classes)
    keep, labels = select_records(ds, classes, parse_mapping(mapping, classes), ignore_unknown)
    all_groups = _groups_for(ds, group_by)
    records = [ds.records[i] for i in keep]
    groups = [all_groups[i] for i in keep] if all_groups is not None else None
    if bundle is None:
        bundle = load_bundle(model)
    if list(bundle.classes) != classes:
        raise LeukoError(f"{model}: the model's classes differ from its metadata")

    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[lab] for lab in labels], dtype=int)
    probs = predict_probs(bundle, [r.path for r in records], batch, "evaluating", tta=tta)
    metrics = classification_metrics(probs, y_true, classes, groups)
    metrics["n_unreadable"] = len(ds.problems)
    metrics["n_skipped_unknown"] = len(ds.records) - len(keep)
    return Evaluation(metrics, records, labels, probs, groups, bundle)


def write_predictions(
    path: Path,
    records: Sequence[Record],
    labels: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    groups: Sequence[str | None] | None,
) -> None:
    """predictions.csv: one row per image, so misclassified images can be opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
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


def render_metrics(m: dict[str, Any]) -> None:
    """Rich tables: summary, per-class report, confusion matrix, top confusions."""
    from rich.table import Table

    labels: list[str] = m["labels"]
    lo, hi = m["accuracy_ci"]
    summary = Table(title="evaluation", title_justify="left", show_header=False)
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
    console.print(summary)

    per = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for c in labels:
        d = m["per_class"][c]
        per.add_row(c, f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['f1']:.3f}",
                    str(d["support"]))
    per.add_section()
    for key, name in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        d = m[key]
        per.add_row(name, f"{d['precision']:.3f}", f"{d['recall']:.3f}", f"{d['f1']:.3f}",
                    str(d["support"]))
    console.print(per)

    cm = np.asarray(m["confusion_matrix"])
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
    console.print(conf)

    if m["top_confusions"]:
        top = Table(title="most frequent confusions", title_justify="left")
        for col in ("true", "predicted as", "count", "% of true"):
            top.add_column(col, justify="right" if col in ("count", "% of true") else "left")
        for d in m["top_confusions"]:
            top.add_row(d["true"], d["predicted"], str(d["count"]), f"{d['percent_of_true']:.1f}%")
        console.print(top)


def run_evaluate_cli(
    data: Path | None,
    model: Path,
    json_path: Path | None = None,
    out: Path | None = None,
    batch: int = 64,
    group_by: str | None = None,
    mapping: Sequence[str] = (),
    ignore_unknown: bool = False,
    tta: int = 1,
) -> None:
    """The `leuko evaluate` command: metrics.json, predictions.csv, confusion.png, tables."""
    if batch < 1:
        raise LeukoError(f"--batch must be at least 1 (got {batch})")
    check_tta(tta)
    data_path = Path(data) if data is not None else default_data()
    if data is None:
        info(f"evaluating on {data_path}")
    if not data_path.exists():
        raise LeukoError(f"{data_path}: no such file or directory")
    model_path = resolve_run_dir(model)  # fail fast when there is no model at all
    ev = evaluate(data_path, model, batch, group_by, mapping, ignore_unknown, tta)
    metrics, bundle = ev.metrics, ev.bundle
    metrics["data"] = str(data_path.resolve())
    metrics["model"] = str(model_path)
    metrics["mapping"] = list(mapping)
    metrics["tta"] = tta > 1
    metrics["tta_views"] = tta

    if out is not None:
        out_dir = Path(out)
    elif bundle.run_dir is not None:
        out_dir = bundle.run_dir
    else:
        out_dir = model_path.parent if model_path.is_file() else model_path
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2) + "\n"
    (out_dir / "metrics.json").write_text(text, encoding="utf-8")
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text, encoding="utf-8")
    write_predictions(
        out_dir / "predictions.csv", ev.records, ev.labels, ev.probs, bundle.classes, ev.groups
    )
    from .plots import plot_confusion

    plot_confusion(
        metrics["confusion_matrix"], bundle.classes, out_dir / "confusion.png",
        title=f"{data_path.name}: accuracy {100 * metrics['accuracy']:.1f}% (n={metrics['n']})",
    )
    render_metrics(metrics)
    info(
        f"wrote {out_dir / 'metrics.json'}, {out_dir / 'predictions.csv'}, "
        f"{out_dir / 'confusion.png'}"
        + (f" and {json_path}" if json_path is not None else "")
    )
