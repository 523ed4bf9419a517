"""Stratified, group-aware train/validation(/test) splits written as CSV manifests.

A file-level split of an augmented dataset puts views of one cell on both sides, so
validation accuracy reads near 1.0 and predicts nothing. Here every group (a source
photo, patient, slide, or rediscovered sibling set) lands in exactly one split, and
each class is split on its own so its share in every split is as close to the
requested fraction as its groups allow.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .console import console, info, simple_table, warn
from .dataset import Dataset, Record, scan
from .errors import LeukoError

SPLIT_FILES = ("train.csv", "val.csv", "test.csv", "classes.json", "split.json")
_DRAWS = 200


# --------------------------------------------------------------------------- groups
def resolve_groups(ds: Dataset, group_by: str, seed: int = 0) -> list[str]:
    """One group id per ``ds.records`` entry, from a spec: auto|none|column:NAME|pattern:REGEX.

    ``auto`` uses the manifest's ``group`` column when it has one and otherwise
    rediscovers augmented siblings from the pixels (cached). ``seed`` is accepted for
    symmetry with the splitters; grouping itself is deterministic.
    """
    del seed  # grouping never depends on it, so caches and evaluations agree
    spec = (group_by or "").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    records = ds.records
    if kind == "none" and not arg:
        return [f"file:{r.rel}" for r in records]
    if kind == "auto" and not arg:
        if ds.has_groups:
            info("group-by auto: using the manifest's group column")
            return [r.group if r.group is not None else f"file:{r.rel}" for r in records]
        from .siblings import discover_groups

        groups = discover_groups([r.path for r in records], [r.label for r in records])
        return _join_duplicates(ds, groups)
    if kind == "column":
        if not arg:
            raise LeukoError("--group-by column:NAME needs a column name, e.g. column:patient")
        return _column_groups(ds, arg)
    if kind == "pattern":
        if not arg:
            raise LeukoError(r"--group-by pattern:REGEX needs a regex, e.g. pattern:^(\w+)_")
        return _pattern_groups(records, arg)
    raise LeukoError(
        f"--group-by must be auto, none, column:NAME or pattern:REGEX (got {group_by!r})"
    )


def _join_duplicates(ds: Dataset, groups: list[str]) -> list[str]:
    """Merge groups that dedupe finds exact or near copies across (e.g. one file in two classes).

    Sibling discovery only compares images within a class; a copy filed under another
    class, or resized/recoloured, must still land in the same split as its original.
    """
    try:
        from .dedupe import find_duplicates
    except ImportError:  # dedupe is optional for splitting
        return groups
    findings = find_duplicates(ds)
    index = {r.rel: i for i, r in enumerate(ds.records)}
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for dup in findings.groups:
        ids = sorted({find(groups[index[f]]) for f in dup.files if f in index})
        for g in ids[1:]:
            parent[g] = ids[0]
    if not parent:
        return groups
    return [find(g) for g in groups]


def _column_groups(ds: Dataset, name: str) -> list[str]:
    records = ds.records
    if name == "group":
        if not ds.has_groups:
            raise LeukoError(f"{ds.source} has no 'group' column to group by")
        return [r.group if r.group is not None else f"file:{r.rel}" for r in records]
    if not any(name in r.extra for r in records):
        available = sorted(
            {k for r in records for k in r.extra} | ({"group"} if ds.has_groups else set())
        )
        where = (
            "a folder has no columns"
            if ds.kind == "folder"
            else f"columns: {', '.join(available) or 'none'}"
        )
        raise LeukoError(f"no manifest column {name!r} to group by ({where})")
    out = []
    for r in records:
        value = r.extra.get(name, "").strip()
        out.append(f"{name}:{value}" if value else f"file:{r.rel}")
    return out


def _pattern_groups(records: Sequence[Record], pattern: str) -> list[str]:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise LeukoError(f"--group-by pattern: invalid regular expression ({exc})") from None
    out: list[str] = []
    misses = 0
    for r in records:
        name = Path(r.rel).name
        m = rx.search(name)
        if m is None:
            misses += 1
            out.append(f"file:{r.rel}")
            continue
        key = next((g for g in m.groups() if g is not None), None) if rx.groups else None
        out.append(f"{r.label}/{key if key is not None else m.group(0)}")
    if misses == len(records):
        raise LeukoError(
            f"--group-by pattern:{pattern} matched none of the {len(records)} file names"
        )
    if misses:
        warn(f"pattern {pattern!r} matched no part of {misses} file names; each is its own group")
    return out


# --------------------------------------------------------------------------- exclude
def load_exclusions(report: Path) -> tuple[set[str], int]:
    """Files (relative to the dataset root) a dedupe report would quarantine, and group count."""
    try:
        data = json.loads(Path(report).read_text())
    except FileNotFoundError:
        raise LeukoError(f"--exclude {report}: no such file") from None
    except (OSError, ValueError) as exc:
        raise LeukoError(
            f"--exclude {report}: not a readable JSON report ({exc})".splitlines()[0]
        ) from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise LeukoError(f"--exclude {report}: not a dedupe report (no 'groups' list)")
    drop: set[str] = set()
    for g in groups:
        if not isinstance(g, dict) or not isinstance(g.get("files"), list):
            raise LeukoError(f"--exclude {report}: a group lacks its 'files' list")
        files = [str(f) for f in g["files"]]
        keep = g.get("keep")
        if g.get("conflict"):
            drop.update(files)
        else:
            drop.update(f for f in files if f != keep)
    return drop, len(groups)


# --------------------------------------------------------------------------- splitting
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
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise LeukoError(
            f"--val and --test must be in [0, 1) with a sum below 1 (got {val}, {test})"
        )
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


# --------------------------------------------------------------------------- outputs
def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LeukoError(f"--out {out} is a file, not a folder")
    existing = [f for f in SPLIT_FILES if (out / f).exists()]
    if existing and not force:
        raise LeukoError(
            f"{out} already holds a split ({existing[0]}); use --force to overwrite it"
        )


def write_split(
    out: Path,
    ds: Dataset,
    records: Sequence[Record],
    result: SplitResult,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Write train/val(/test).csv, classes.json and split.json; return the summary."""
    import pandas as pd

    classes = sorted(ds.classes)
    label_id = {c: i for i, c in enumerate(classes)}
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {"params": params, "classes": classes, "splits": splits}
    for name in ("train", "val", "test"):
        path = out / f"{name}.csv"
        idx = result.splits[name]
        if name == "test" and not idx and not float(params.get("test") or 0) > 0:
            if path.exists():
                path.unlink()  # a stale test.csv from an earlier --test run would mislead
            continue
        frame = pd.DataFrame(
            {
                "path": [str(Path(records[i].path).resolve()) for i in idx],
                "label": [records[i].label for i in idx],
                "label_id": [label_id[records[i].label] for i in idx],
                "group": [result.groups[i] for i in idx],
                "rel": [records[i].rel for i in idx],
            },
            columns=["path", "label", "label_id", "group", "rel"],
        )
        frame.to_csv(path, index=False)
        per_class = Counter(records[i].label for i in idx)
        groups_per_class: dict[str, set[str]] = defaultdict(set)
        for i in idx:
            groups_per_class[records[i].label].add(result.groups[i])
        splits[name] = {
            "images": len(idx),
            "groups": len({result.groups[i] for i in idx}),
            "per_class": {c: per_class.get(c, 0) for c in classes},
            "groups_per_class": {c: len(groups_per_class.get(c, ())) for c in classes},
        }
    (out / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")
    total = Counter(r.label for r in records)
    achieved = {
        name: {c: round(s["per_class"][c] / total[c], 4) if total.get(c) else 0.0 for c in classes}
        for name, s in splits.items()
    }
    summary["achieved_fractions"] = achieved
    summary["warnings"] = result.warnings
    (out / "split.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _render(summary: dict[str, Any], classes: list[str]) -> None:
    splits: dict[str, dict[str, Any]] = summary["splits"]
    names = list(splits)
    cols = ["class"]
    for n in names:
        cols += [f"{n} images", f"{n} groups"]
    cols += [f"{n} share" for n in names if n != "train"]
    rows: list[list[object]] = []
    totals = {n: 0 for n in names}
    for c in classes:
        row: list[object] = [c]
        for n in names:
            row += [splits[n]["per_class"][c], splits[n]["groups_per_class"][c]]
            totals[n] += splits[n]["per_class"][c]
        all_c = sum(splits[n]["per_class"][c] for n in names) or 1
        row += [f"{splits[n]['per_class'][c] / all_c:.3f}" for n in names if n != "train"]
        rows.append(row)
    grand = sum(totals.values()) or 1
    last: list[object] = ["all"]
    for n in names:
        last += [totals[n], splits[n]["groups"]]
    last += [f"{totals[n] / grand:.3f}" for n in names if n != "train"]
    rows.append(last)
    console.print(simple_table("split", cols, rows))


def run_split(
    data: Path,
    out: Path,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 42,
    group_by: str = "auto",
    exclude: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Scan, group, split and write; the library entry point behind `leuko split`."""
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise LeukoError(
            f"--val and --test must be in [0, 1) with a sum below 1 (got {val}, {test})"
        )
    out = Path(out).expanduser()
    _check_out(out, force)
    ds = scan(data)
    if ds.problems:
        warn(
            f"{len(ds.problems)} file(s) skipped as unusable "
            f"(e.g. {ds.problems[0].rel}: {ds.problems[0].reason})"
        )
    records = list(ds.records)
    excluded = 0
    if exclude is not None:
        drop, n_groups = load_exclusions(exclude)
        kept = [r for r in records if r.rel not in drop]
        excluded = len(records) - len(kept)
        if drop and not excluded:
            warn(
                f"--exclude {exclude}: none of its {len(drop)} files is in {ds.root}; "
                "wrong dataset?"
            )
        else:
            info(f"excluded {excluded} file(s) named by {n_groups} group(s) of {exclude}")
        records = kept
        if not records:
            raise LeukoError(f"--exclude {exclude} leaves no images to split")
        ds = Dataset(ds.root, ds.source, ds.kind, records, ds.problems, ds.classes)
    groups = resolve_groups(ds, group_by, seed)
    result = split_dataset([r.label for r in records], groups, val=val, test=test, seed=seed)
    for w in result.warnings:
        warn(w)
    params: dict[str, Any] = {
        "data": str(ds.source),
        "val": val,
        "test": test,
        "seed": seed,
        "group_by": group_by,
        "exclude": str(exclude) if exclude else None,
        "excluded": excluded,
        "images": len(records),
        "groups": len(set(groups)),
    }
    summary = write_split(out, ds, records, result, params)
    _render(summary, sorted(ds.classes))
    written = ", ".join(f"{n}.csv" for n in summary["splits"])
    info(f"wrote {written}, classes.json and split.json to {out}")
    return summary


def run_split_cli(
    data: Path,
    out: Path,
    val: float,
    test: float,
    seed: int,
    group_by: str,
    exclude: Path | None,
    force: bool,
) -> None:
    """CLI wrapper (errors propagate as LeukoError for the CLI to print)."""
    run_split(
        data, out, val=val, test=test, seed=seed, group_by=group_by, exclude=exclude, force=force
    )
