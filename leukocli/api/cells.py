"""Whole smear photos: `count`, the white cells found, classified and counted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._util.progress import SILENT, Reporter
from ._common import DEFAULT_MODEL, PathLike, Paths, as_list

if TYPE_CHECKING:
    from ..counting.pipeline import CountResult
    from ..modeling.bundle import Bundle


def count(paths: Paths, *, model: PathLike | Bundle | None = DEFAULT_MODEL,
          out: PathLike | None = None, cell_size: float = 0.4, evaluate: bool = False,
          reporter: Reporter = SILENT) -> CountResult:
    """Find every white cell in whole-field smear photos, classify each, and count.

    As `leuko count`, through the same core (`run_count`): the same cells and figures,
    and with `out` the same files.

    Args:
        paths: one or several photos, folders or globs.
        model: what `load_model` takes, or a Bundle it returned; None locates only (every
            cell is "WBC"). Unlike the command, a missing runs/latest is an error, not
            the shipped classifier: name it (model="wbc") to use that.
        out: also write cells.csv, counts.csv, counts.json and annotated/NAME.png here
            (only then; checked before any photo is counted).
        cell_size: the expected white-cell diameter, as a share of the photo's shorter
            side (0.4 for BCCD-like 100x fields).
        evaluate: score against the photos' Pascal VOC boxes (Annotations/NAME.xml):
            detection precision and recall at IoU 0.5, class accuracy where named.
    Returns:
        CountResult: `.cells` (photo, box, confidence, label, probability), `.summary`
        (classes, per photo and total counts and percentages), `.evaluation` (None
        without `evaluate`), `.unreadable` ((path, reason): skipped, not raised),
        `.written`; `.to_dict()` is counts.json.
    Raises:
        LeukoError: no photos or none readable, a bad cell_size, no model, a missing or
        malformed annotation with `evaluate`.
    """
    from ..counting.pipeline import run_count

    return run_count(as_list(paths), model=model, out=None if out is None else Path(out),
                     cell_size=cell_size, evaluate=evaluate, reporter=reporter)
