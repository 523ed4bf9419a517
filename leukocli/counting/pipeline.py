"""`leuko count` as one core call: photos in, cells, differential and (optionally) files out.

The command line and `lk.count` both call `run_count`, so they find, classify, count and
score the same cells and write the same bytes; they differ only in how they show it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, ParameterError, opt
from ..modeling.bundle import Bundle
from .count import CountedCell

LOCATED_ONLY = "WBC"  # the one class of a count without a model


@dataclass
class CountResult:
    """What a count found: every cell, the differential, the score, what it wrote."""

    cells: list[CountedCell]
    summary: dict[str, Any]  # counts.json without "evaluation": classes, photos, total
    evaluation: dict[str, Any] | None  # --eval's scores (None without it)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    written: list[Path] = field(default_factory=list)  # files written (none without out)
    corrections: dict[str, Any] | None = None  # what a person's corrections changed

    @property
    def classes(self) -> list[str]:
        return list(self.summary["classes"])

    def to_dict(self) -> dict[str, Any]:
        """counts.json's content (and `leuko count --format json`'s)."""
        extra = {} if self.corrections is None else {"corrections": self.corrections}
        return {**self.summary, "evaluation": self.evaluation, **extra}


def check_cell_size(cell_size: float) -> None:
    """The one check of `cell_size` (a share of the photo's shorter side)."""
    if not 0.02 <= cell_size <= 1.0:
        raise ParameterError("cell_size", f"{opt('cell_size')} must be between 0.02 and 1 "
                                          f"(got {cell_size})")


def run_count(paths: Sequence[str | os.PathLike[str]], *,
              model: Bundle | str | os.PathLike[str] | None, out: Path | None = None,
              cell_size: float = 0.4, evaluate: bool = False,
              corrections: str | os.PathLike[str] | None = None, runtime: str = "auto",
              reporter: Reporter = SILENT) -> CountResult:
    """Locate every white cell in the photos, classify each with `model` (None: locate
    only, every cell "WBC"), count per photo and in total, and score against Pascal VOC
    boxes when `evaluate`. With `corrections` (a file `leuko review` saved), each cell a
    person corrected counts in the person's class. With `out`, write cells.csv,
    counts.csv, counts.json and annotated/NAME.png there (checked before any photo is
    counted). `runtime` "auto" classifies with the model's TensorFlow-free twin when it
    is fresh, "keras" with Keras.

    Unreadable photos (and paths that are not images) are returned in `.unreadable`,
    not raised; LeukoError when none is readable, on bad options, a missing or malformed
    annotation under `evaluate`, no model, or corrections that are not leuko's or name
    a cell this count did not find.
    """
    from ..evaluation.predict import collect_images
    from ..modeling.twin import check_runtime
    from .locate import LocatorParams
    from .voc import check_annotations

    check_cell_size(cell_size)
    runtime = check_runtime(runtime)
    photos, errors = collect_images([os.fspath(p) for p in paths])
    if evaluate:
        check_annotations(photos)
    photos = _readable(photos, errors, reporter)
    bundle = _bundle(model, runtime, reporter)
    fixes = _corrections(corrections, bundle)
    if out is not None:
        from .._util.files import ensure_writable_dir

        ensure_writable_dir(Path(out))
    return _count(photos, bundle, LocatorParams(cell=cell_size), None if out is None
                  else Path(out), evaluate, errors, reporter, fixes)


def _corrections(path: str | os.PathLike[str] | None, bundle: Bundle | None
                 ) -> tuple[str, list[Any]] | None:
    """The corrections file's rows, checked against the model's classes before counting."""
    if path is None:
        return None
    from ..data.corrections import read_corrections

    classes = list(bundle.classes) if bundle is not None else [LOCATED_ONLY]
    return os.fspath(path), read_corrections(path, classes)


def _readable(photos: list[Path], errors: list[tuple[str, str]], reporter: Reporter
              ) -> list[Path]:
    """The photos that decode (a decompression bomb, say, is skipped like predict skips
    it); the others are added to `errors`."""
    from ..data.images import check_images

    reasons = check_images(photos, "decode", "checking photos", reporter)
    errors += [(str(p), r) for p, r in zip(photos, reasons, strict=True) if r is not None]
    good = [p for p, r in zip(photos, reasons, strict=True) if r is None]
    if not good:
        raise LeukoError(f"none of the photos is readable ({errors[0][0]}: {errors[0][1]})")
    return good


def _bundle(model: Bundle | str | os.PathLike[str] | None, runtime: str, reporter: Reporter
            ) -> Bundle | None:
    """The model by name: its TensorFlow-free twin when fresh (the same probabilities
    within 1e-4), else Keras, said through `reporter`."""
    if model is None or isinstance(model, Bundle):
        return model
    from ..modeling.bundle import load_bundle, resolve_run_dir

    resolve_run_dir(Path(model))
    return load_bundle(Path(model), runtime, reporter)


def _count(photos: list[Path], bundle: Bundle | None, params: Any, out: Path | None,
           evaluate: bool, errors: list[tuple[str, str]], reporter: Reporter,
           fixes: tuple[str, list[Any]] | None) -> CountResult:
    from .corrected import apply_corrections, differential_classes
    from .count import count_photos, counts, evaluate_counts

    cells, bad = count_photos(photos, bundle, params, reporter)
    errors += bad
    unreadable = {path for path, _ in bad}
    readable = [p for p in photos if str(p) not in unreadable]
    classes = list(bundle.classes) if bundle is not None else [LOCATED_ONLY]
    said = None
    if fixes is not None:
        applied = apply_corrections(cells, fixes[1])
        cells, said = applied.cells, applied.to_dict(fixes[0])
        classes = differential_classes(classes, cells)
    result = CountResult(cells, counts(cells, readable, classes),
                         evaluate_counts(cells, readable, classes) if evaluate else None,
                         errors, corrections=said)
    if out is not None:
        result.written = write_count(result, readable, out, reporter)
    return result


def write_count(result: CountResult, photos: Sequence[Path], out: Path,
                reporter: Reporter = SILENT) -> list[Path]:
    """cells.csv, counts.csv, counts.json and one annotated PNG per counted photo."""
    from .._util.files import atomic_write_json, atomic_write_text
    from .count import annotate, cells_csv, counts_csv

    written = [out / "cells.csv", out / "counts.csv", out / "counts.json"]
    atomic_write_text(written[0], cells_csv(result.cells))
    atomic_write_text(written[1], counts_csv(result.summary))
    atomic_write_json(written[2], result.to_dict())
    with reporter.task("annotating", len(photos)) as advance:
        for p in photos:
            target = out / "annotated" / f"{p.stem}.png"
            annotate(p, [c for c in result.cells if c.photo == str(p)], result.classes,
                     target)
            written.append(target)
            advance()
    return written
