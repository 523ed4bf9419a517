"""Cells a person looks at: `count` (white cells found in smear photos, classified and
counted) and `review` (the page on which a person verifies and corrects them)."""

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
          corrections: PathLike | None = None, runtime: str = "auto",
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
        corrections: a corrections CSV saved by the `review` page: the cells a person
            reclassified count in the person's class; `.corrections` says how many.
        runtime: "auto" classifies with the model's TensorFlow-free twin when it is
            fresh (the same probabilities within 1e-4), "keras" always with Keras.
    Returns:
        CountResult: `.cells` (photo, box, confidence, label, probability), `.summary`
        (classes, per photo and total counts and percentages), `.evaluation` (None
        without `evaluate`), `.unreadable` ((path, reason): skipped, not raised),
        `.written`; `.to_dict()` is counts.json.
    Raises:
        LeukoError: no photos or none readable, a bad cell_size, no model, a missing or
        malformed annotation with `evaluate`, corrections that are not leuko's or name a
        cell this count did not find.
    """
    from ..counting.pipeline import run_count

    return run_count(as_list(paths), model=model, out=None if out is None else Path(out),
                     cell_size=cell_size, evaluate=evaluate, corrections=corrections,
                     runtime=runtime, reporter=reporter)


def review(source: PathLike, *, out: PathLike | None = None, top: int = 0,
           uncertain: float = 0.8, reporter: Reporter = SILENT) -> Path:
    """Write the page on which a person verifies leuko's classes, as `leuko review`.

    Args:
        source: a count's output folder (cells.csv), an audit's (audit.csv), or a
            predictions CSV (`leuko predict --format csv`).
        out: the HTML file (default review.html in the folder, or beside the CSV); a
            file there that leuko did not write is kept and the page goes beside it.
        top: only the `top` least confident cells (0: all).
        uncertain: the page's "uncertain only" filter shows cells below this probability.
    Returns:
        The page's path. Its "Save corrections" downloads the CSV that `count(...,
        corrections=)` and the training functions' `relabel=` read.
    Raises:
        LeukoError: a source that is not leuko's output, no cells, no readable photo.
    """
    from ..review.page import build_review

    return build_review(source, out=None if out is None else Path(out), top=top,
                        uncertain=uncertain, reporter=reporter)[0]
