"""Two labs (or sites, or microscopes) in one training set, made to weigh alike.

Trained on PBC and blood-cells at once, a model learned mostly the larger lab's look;
`balance_by` names a manifest column whose values should count the same.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..errors import ParameterError, opt
from .dataset import Dataset, Record


def check_balance_column(source: Path, column: str) -> None:
    """Refuse a balance_by column that cannot work before any image is read: none named,
    one of leuko's own, a folder (which has no columns), or a header without it."""
    import pandas as pd

    name = column.strip()
    if not name:
        raise ParameterError("balance_by", f"{opt('balance_by')} names no column")
    if name in ("path", "label", "group"):
        raise ParameterError("balance_by", f"{opt('balance_by', name)}: leuko reads {name!r} "
                             f"itself; name a column of your own (a lab, a site), and weigh "
                             f"classes with {opt('class_weights')}")
    if Path(source).is_dir():
        raise ParameterError("balance_by", f"{opt('balance_by', name)} needs a CSV manifest "
                             f"with that column; {source} is a folder")
    try:
        header = pd.read_csv(source, nrows=0).columns
    except (OSError, ValueError):
        return  # the scan says what is wrong with the file
    if name not in header:
        raise ParameterError("balance_by", f"{opt('balance_by', name)}: {source} has no "
                             f"column {name!r}")


def oversample(ds: Dataset, column: str) -> tuple[Dataset, dict[str, int]]:
    """Each value of a manifest column (a lab, a microscope) repeated to weigh about as
    much as the largest, and how many times each was taken.

    Trained on two labs at once, a model otherwise learns mostly the larger one's look.
    A value's rows are taken round(largest / its count) times in all, the repeats
    appended in manifest order after the originals, so a run is reproducible from the
    manifest and the column alone.
    """
    check_balance_column(ds.source, column)
    column = column.strip()
    missing = sum(1 for r in ds.records if not r.extra.get(column, "").strip())
    if missing:
        raise ParameterError("balance_by", f"{ds.source}: {missing} row(s) have no {column!r} "
                                           "value to balance by")
    members: dict[str, list[Record]] = defaultdict(list)
    for r in ds.records:
        members[r.extra[column].strip()].append(r)
    largest = max(len(m) for m in members.values())
    times = {v: max(1, round(largest / len(m))) for v, m in sorted(members.items())}
    records = list(ds.records)
    for value, m in sorted(members.items()):
        records += m * (times[value] - 1)
    return Dataset(ds.root, ds.source, ds.layout, records, ds.problems, ds.classes), times
