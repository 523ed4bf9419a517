"""A count with a person's corrections applied: the differential a lab signs off.

A machine's differential is a proposal; `leuko review` lets a person move the wrong
cells and saves what they changed. Applied here, each row finds its cell by photo and box
(the same photos counted with the same model give the same boxes), takes the person's
class, and keeps the model's in `predicted`; cells that are no white cell leave the
differential but stay in cells.csv, so a later review still shows them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.corrections import (
    BOX_TOLERANCE,
    NOT_WBC,
    SPECIAL,
    UNCLASSIFIABLE,
    Correction,
    same_photo,
)
from ..errors import LeukoError, opt
from .count import CountedCell


@dataclass
class Applied:
    """The corrected cells and what the corrections changed."""

    cells: list[CountedCell]
    changed: int  # cells the person gave another of the model's classes
    not_wbc: int  # cells the person said are no white cell
    unclassifiable: int

    def to_dict(self, source: str) -> dict[str, object]:
        return {"file": source, "changed": self.changed, "not_white_cells": self.not_wbc,
                "unclassifiable": self.unclassifiable}


def apply_corrections(cells: Sequence[CountedCell], corrections: Sequence[Correction]
                      ) -> Applied:
    """Every row must find its cell; a row that does not is a count of other photos, or of
    another model, and is refused rather than silently dropped."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cells):
        by_name[Path(c.photo).name].append(i)
    out = list(cells)
    for row in corrections:
        if row.box is None:
            raise LeukoError(f"{row.photo}: a correction without a box is a single-cell "
                             f"image's label; give such rows to split/train/cv {opt('relabel')}")
        i = _find(row, cells, by_name.get(Path(row.photo).name, []))
        cell = out[i]
        out[i] = replace(cell, label=row.corrected, predicted=cell.proposed,
                         corrected_at=row.when or "unknown")
    changed = sum(1 for c in out if c.corrected_at and c.label != c.predicted
                  and c.label not in SPECIAL)
    return Applied(out, changed, sum(1 for c in out if c.label == NOT_WBC),
                   sum(1 for c in out if c.label == UNCLASSIFIABLE))


def _find(row: Correction, cells: Sequence[CountedCell], candidates: list[int]) -> int:
    assert row.box is not None
    for i in candidates:
        c = cells[i]
        if same_photo(row.photo, c.photo) and all(
                abs(a - b) <= BOX_TOLERANCE for a, b in zip(row.box, c.box, strict=True)):
            return i
    box = ", ".join(f"{v:g}" for v in row.box)
    raise LeukoError(f"a correction names a cell this count did not find ({row.photo} at "
                     f"{box}): count the photos the review showed, with the same model")


def differential_classes(classes: Sequence[str], cells: Sequence[CountedCell]) -> list[str]:
    """The model's classes, and UNCLASSIFIABLE after them when a person used it."""
    extra = [UNCLASSIFIABLE] if any(c.label == UNCLASSIFIABLE for c in cells) else []
    return [*classes, *extra]
