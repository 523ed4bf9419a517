"""Stratified, group-aware train/validation(/test) splits written as CSV manifests.

A file-level split of an augmented dataset puts views of one cell on both sides, so
validation accuracy reads near 1.0 and predicts nothing. Here every group (a source
photo, patient, slide, or rediscovered sibling set; see `groups`) lands in exactly one
split, and each class is split on its own so its share in every split is as close to
the requested fraction as its groups allow.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util.files import (
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    file_sha256,
    output_lock,
)
from .._util.progress import SILENT, Reporter, spoken
from ..data.dataset import Dataset, Record, add_own_columns, require_classes, scan
from ..errors import LeukoError, ParameterError, opt
from .groups import check_group_spec, load_exclusions, resolve_groups

SPLIT_FILES = ("train.csv", "val.csv", "test.csv", "classes.json", "split.json")
_DRAWS = 200


def check_fractions(val: float, test: float) -> None:
    """The one check of --val and --test."""
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise ParameterError(
            "val" if not 0 <= val < 1 else "test", f"{opt('val')} and {opt('test')} must be "
            f"in [0, 1) with a sum below 1 (got {val}, {test})"
        )


@dataclass
class SplitResult:
    """Indices into the records per split, plus the group of every record."""

    splits: dict[str, list[int]]
    groups: list[str]
    warnings: list[str] = field(default_factory=list)


def _carve(
    idx: list[int], groups: Sequence[str], frac: float, seed: int
) -> tuple[list[int], list[int]]:
    """Split one class's records so about `frac` of its images go out, whole groups only.

    GroupShuffleSplit draws many candidate group subsets; the one whose image share is
    closest to the target wins (ties go to the earliest draw, so a seed is repeatable).
    """
    from sklearn.model_selection import GroupShuffleSplit

    if frac <= 0 or not idx:
        return idx, []
    g = np.array([groups[i] for i in idx])
    n_groups = len(set(g.tolist()))
    if n_groups < 2:
        return idx, []
    target = frac * len(idx)
    best: tuple[float, int, np.ndarray] | None = None
    # Group counts around the target, so large-and-few groups still hit the fraction.
    mean_size = len(idx) / n_groups
    k0 = max(1, min(n_groups - 1, round(target / mean_size)))
    ks = sorted({max(1, min(n_groups - 1, k0 + d)) for d in (-1, 0, 1)})
    draw = 0
    for k in ks:
        gss = GroupShuffleSplit(n_splits=_DRAWS, test_size=k, random_state=seed + 7919 * k)
        for _, out in gss.split(np.zeros(len(idx)), groups=g):
            err = abs(len(out) - target)
            if best is None or err < best[0]:
                best = (err, draw, out)
            draw += 1
    assert best is not None
    chosen = set(best[2].tolist())
    keep = [i for j, i in enumerate(idx) if j not in chosen]
    taken = [i for j, i in enumerate(idx) if j in chosen]
    return keep, taken


def split_dataset(
    labels: Sequence[str],
    groups: Sequence[str],
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 42,
) -> SplitResult:
    """Assign each record to train/val/test with whole groups, stratified by class.

    A group spanning several labels is placed by its most common label, so it still
    lands in one split. Test is carved first, then validation from the rest.
    """
    check_fractions(val, test)
    if len(labels) != len(groups):
        raise ValueError("labels and groups differ in length")
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    owner: dict[str, str] = {}
    for g, members in by_group.items():
        counts = Counter(labels[i] for i in members)
        owner[g] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    per_class: dict[str, list[int]] = defaultdict(list)
    for g in sorted(by_group, key=lambda g: by_group[g][0]):
        per_class[owner[g]].extend(by_group[g])

    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    warnings: list[str] = []
    needed = 1 + (val > 0) + (test > 0)
    for c in sorted(per_class):
        idx = sorted(per_class[c])
        n_groups = len({groups[i] for i in idx})
        if n_groups < needed:
            warnings.append(
                f"class {c} has only {n_groups} group(s); "
                f"cannot place one in each of {needed} splits"
            )
        rest, tst = _carve(idx, groups, test, seed) if test > 0 and n_groups >= 2 else (idx, [])
        rest_groups = len({groups[i] for i in rest})
        frac_val = val / (1 - test) if test > 0 else val
        tr, va = (
            _carve(rest, groups, frac_val, seed + 1) if val > 0 and rest_groups >= 2 else (rest, [])
        )
        splits["train"] += tr
        splits["val"] += va
        splits["test"] += tst
    for k in splits:
        splits[k].sort()
    return SplitResult(splits, list(groups), warnings)


def check_out(out: Path, force: bool) -> Path:
    """A writable --out that holds no split yet (or --force); checked before any work."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{opt('out', out)} is a file, not a folder")
    existing = [f for f in SPLIT_FILES if (out / f).exists()]
    if existing and not force:
        raise LeukoError(
            f"{out} already holds a split ({existing[0]}); use {opt('force', True)} to "
            "overwrite it"
        )
    return ensure_writable_dir(out)


def _frame(records: Sequence[Record], idx: list[int], groups: Sequence[str],
           label_id: dict[str, int]) -> str:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "path": [str(Path(records[i].path).resolve()) for i in idx],
            "label": [records[i].label for i in idx],
            "label_id": [label_id[records[i].label] for i in idx],
            "group": [groups[i] for i in idx],
            "rel": [records[i].rel for i in idx],
        },
        columns=["path", "label", "label_id", "group", "rel"],
    )
    add_own_columns(frame, [records[i] for i in idx])
    return frame.to_csv(index=False)


def _describe(records: Sequence[Record], idx: list[int], groups: Sequence[str],
              classes: list[str]) -> dict[str, Any]:
    per_class = Counter(records[i].label for i in idx)
    groups_per_class: dict[str, set[str]] = defaultdict(set)
    for i in idx:
        groups_per_class[records[i].label].add(groups[i])
    return {
        "images": len(idx),
        "groups": len({groups[i] for i in idx}),
        "per_class": {c: per_class.get(c, 0) for c in classes},
        "groups_per_class": {c: len(groups_per_class.get(c, ())) for c in classes},
    }


def write_split(
    out: Path,
    ds: Dataset,
    records: Sequence[Record],
    result: SplitResult,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Write train/val(/test).csv, classes.json and split.json; return the summary.

    Each file is replaced atomically; a stale test.csv from an earlier --test run is
    removed, since it would mislead `leuko evaluate`.
    """
    classes = sorted(ds.classes)
    label_id = {c: i for i, c in enumerate(classes)}
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, Any]] = {}
    for name in ("train", "val", "test"):
        path = out / f"{name}.csv"
        idx = result.splits[name]
        if name == "test" and not idx and not float(params.get("test") or 0) > 0:
            path.unlink(missing_ok=True)
            continue
        atomic_write_text(path, _frame(records, idx, result.groups, label_id))
        splits[name] = _describe(records, idx, result.groups, classes)
    atomic_write_json(out / "classes.json", classes)
    total = Counter(r.label for r in records)
    summary: dict[str, Any] = {"params": params, "classes": classes, "splits": splits}
    summary["achieved_fractions"] = {
        name: {c: round(s["per_class"][c] / total[c], 4) if total.get(c) else 0.0 for c in classes}
        for name, s in splits.items()
    }
    summary["warnings"] = result.warnings
    atomic_write_json(out / "split.json", summary)
    return summary


def apply_exclude(ds: Dataset, exclude: Path, reporter: Reporter) -> tuple[Dataset, int]:
    """The dataset without what a dedupe report would quarantine, and how many went."""
    drop, n_groups = load_exclusions(exclude)
    kept = [r for r in ds.records if r.rel not in drop]
    excluded = len(ds.records) - len(kept)
    if drop and not excluded:
        reporter.warn(spoken(reporter, f"{opt('exclude', exclude)}: none of its {len(drop)} "
                             f"files is in {ds.root}; wrong dataset?"))
    else:
        reporter.info(f"excluded {excluded} file(s) named by {n_groups} group(s) of {exclude}")
    if not kept:
        raise ParameterError("exclude", f"{opt('exclude', exclude)} leaves no images to "
                                        "split")
    return Dataset(ds.root, ds.source, ds.layout, kept, ds.problems, ds.classes), excluded


def load_grouped(
    data: Path, group_by: str, exclude: Path | None, reporter: Reporter = SILENT,
    relabel: str | Path | None = None,
) -> tuple[Dataset, list[str], int]:
    """Scan, drop excluded files, apply a person's relabels (a corrections CSV) and group:
    what `split` and `cv` both start from."""
    check_group_spec(group_by)
    ds = scan(data, reporter=reporter)
    if ds.problems:
        reporter.warn(
            f"{len(ds.problems)} file(s) skipped as unusable "
            f"(e.g. {ds.problems[0].rel}: {ds.problems[0].reason})"
        )
    excluded = 0
    if exclude is not None:
        ds, excluded = apply_exclude(ds, exclude, reporter)
    if relabel is not None:
        from ..data.corrections import relabel_parts

        (ds,), done = relabel_parts([ds], relabel)
        reporter.info(spoken(reporter, f"{opt('relabel')}: {done['changed']} image(s) given "
                             f"another class, {done['excluded']} left out"))
    require_classes(ds)
    return ds, resolve_groups(ds, group_by, reporter), excluded


def run_split(
    data: Path,
    out: Path,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 42,
    group_by: str = "auto",
    exclude: Path | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
    relabel: Path | None = None,
) -> dict[str, Any]:
    """Scan, group, split and write; the library entry point behind `leuko split`."""
    check_fractions(val, test)
    check_group_spec(group_by)
    out = check_out(out, force)
    # locked from the start: a second split into the same folder is refused at once
    with output_lock(out, "leuko split"):
        ds, groups, excluded = load_grouped(data, group_by, exclude, reporter, relabel)
        records = ds.records
        result = split_dataset([r.label for r in records], groups, val=val, test=test,
                               seed=seed)
        for w in result.warnings:
            reporter.warn(w)
        params: dict[str, Any] = {
            "data": str(ds.source), "val": val, "test": test, "seed": seed,
            "group_by": group_by, "exclude": str(exclude) if exclude else None,
            "excluded": excluded, "images": len(records), "groups": len(set(groups)),
            "relabel": None if relabel is None else {"file": str(Path(relabel).resolve()),
                                                     "sha256": file_sha256(Path(relabel))},
        }
        check_out(out, force)  # another split may have written it before the lock
        summary = write_split(out, ds, records, result, params)
    written = ", ".join(f"{n}.csv" for n in summary["splits"])
    reporter.info(f"wrote {written}, classes.json and split.json to {out}")
    return summary
