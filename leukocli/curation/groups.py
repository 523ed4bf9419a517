"""Which images belong together: groups that a split or a fold must never cut.

A group is a source photo, patient, slide or rediscovered sibling set. ``auto`` finds
augmented siblings from the pixels (`siblings`) and joins dedupe's copies, so a copy
filed under another class, or resized or recoloured, lands with its original.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .._util.files import read_json_object
from .._util.progress import SILENT, Reporter
from .._util.unionfind import KeyedUnionFind
from ..data.dataset import Dataset, Record
from ..errors import LeukoError, ParameterError, opt


def check_group_spec(group_by: str) -> None:
    """Refuse a malformed --group-by before any work (no scan, no TensorFlow)."""
    kind, sep, arg = (group_by or "").strip().partition(":")
    kind = kind.lower()
    if kind in ("auto", "none") and not sep:
        return
    if kind == "column" and not arg:
        raise ParameterError("group_by", f"{opt('group_by', 'column:NAME')} needs a column "
                                         "name, e.g. column:patient")
    if kind == "pattern":
        if not arg:
            raise ParameterError("group_by", f"{opt('group_by', 'pattern:REGEX')} needs a "
                                             r"regex, e.g. pattern:^(\w+)_")
        try:
            re.compile(arg)
        except re.error as exc:
            raise ParameterError("group_by", f"{opt('group_by', 'pattern:')} invalid regular "
                                             f"expression ({exc})") from None
        return
    if kind == "column":
        return
    raise ParameterError(
        "group_by", f"{opt('group_by')} must be auto, none, column:NAME or pattern:REGEX "
        f"(got {group_by!r})"
    )


def resolve_groups(ds: Dataset, group_by: str, reporter: Reporter = SILENT) -> list[str]:
    """One group id per ``ds.records`` entry, from a spec: auto|none|column:NAME|pattern:REGEX.

    ``auto`` uses the manifest's ``group`` column when it has one and otherwise
    rediscovers augmented siblings from the pixels (cached). Grouping is deterministic.
    """
    check_group_spec(group_by)
    spec = (group_by or "").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    records = ds.records
    if kind == "none" and not arg:
        return [f"file:{r.rel}" for r in records]
    if kind == "auto" and not arg:
        if ds.has_groups:
            reporter.info("group-by auto: using the manifest's group column")
            return [r.group if r.group is not None else f"file:{r.rel}" for r in records]
        from .siblings import discover_groups

        labels = [r.label for r in records]
        groups = discover_groups([r.path for r in records], labels, reporter)
        return _join_duplicates(ds, groups, reporter)
    if kind == "column":
        return _column_groups(ds, arg)
    if kind == "pattern":
        return _pattern_groups(records, arg, reporter)
    raise AssertionError("unreachable: check_group_spec accepted it")


def _join_duplicates(ds: Dataset, groups: list[str], reporter: Reporter) -> list[str]:
    """Merge groups that dedupe finds exact or near copies across (e.g. one file in two classes).

    Sibling discovery only compares images within a class; a copy filed under another
    class, or resized/recoloured, must still land in the same split as its original.
    """
    from .dedupe import find_duplicates

    findings = find_duplicates(ds, reporter=reporter)
    index = {r.rel: i for i, r in enumerate(ds.records)}
    uf: KeyedUnionFind[str] = KeyedUnionFind()
    for dup in findings.groups:
        ids = sorted({groups[index[f]] for f in dup.files if f in index})
        for g in ids[1:]:
            uf.union(ids[0], g)
    return [uf.find(g) for g in groups]


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
            if ds.layout == "folder"
            else f"columns: {', '.join(available) or 'none'}"
        )
        raise LeukoError(f"no manifest column {name!r} to group by ({where})")
    out = []
    for r in records:
        value = r.extra.get(name, "").strip()
        out.append(f"{name}:{value}" if value else f"file:{r.rel}")
    return out


def _pattern_groups(records: Sequence[Record], pattern: str, reporter: Reporter) -> list[str]:
    rx = re.compile(pattern)  # check_group_spec has compiled it once already
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
        raise ParameterError(
            "group_by", f"{opt('group_by', 'pattern:' + pattern)} matched none of the "
            f"{len(records)} file names"
        )
    if misses:
        reporter.warn(
            f"pattern {pattern!r} matched no part of {misses} file names; each is its own group"
        )
    return out


# --------------------------------------------------------------------------- exclude
def load_exclusions(report: Path) -> tuple[set[str], int]:
    """Files (relative to the dataset root) a dedupe report would quarantine, and group count."""
    try:
        data = read_json_object(report, "dedupe report")
    except LeukoError as exc:
        raise ParameterError("exclude", f"{opt('exclude')} {exc.template}") from None
    groups = data.get("groups")
    if not isinstance(groups, list):
        raise ParameterError("exclude", f"{opt('exclude', report)}: not a dedupe report "
                                        "(no 'groups' list)")
    drop: set[str] = set()
    for g in groups:
        if not isinstance(g, dict) or not isinstance(g.get("files"), list):
            raise ParameterError("exclude", f"{opt('exclude', report)}: a group lacks its "
                                            "'files' list")
        files = [str(f) for f in g["files"]]
        keep = g.get("keep")
        if g.get("conflict"):
            drop.update(files)
        else:
            drop.update(f for f in files if f != keep)
    return drop, len(groups)


