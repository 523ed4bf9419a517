"""A person's corrections of leuko's classes: the file `leuko review` saves, read back.

One CSV, a row per cell the person changed: the photo (or, for a single-cell image, the
image's path), the cell's box in that photo (empty for a single-cell image), the class
leuko proposed, the class the person gave and when. Two answers are not classes: a
located object that is no white cell, and a white cell nobody can classify. `count
--corrections` applies rows with boxes to a count; `--relabel` gives rows without boxes
to split, train and cv as labels. Both only read the file: no image is touched.

The file comes from a person, maybe from another lab: it is refused in one line unless
it has exactly this header, a known class in every row and sane numbers, and its paths
only name images (they are matched against the images a command already has, never
opened or moved because a row says so).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LeukoError, ParameterError, cmd, opt
from .dataset import Dataset, Record

HEADER = ("photo", "x_min", "y_min", "x_max", "y_max", "predicted", "corrected", "when")
NOT_WBC = "NOT_WBC"  # a located object that is no white cell (left out of the differential)
UNCLASSIFIABLE = "UNCLASSIFIABLE"  # a white cell no class fits (counted on its own)
SPECIAL = {NOT_WBC: "not a white cell", UNCLASSIFIABLE: "unclassifiable"}
MAX_BYTES = 64 * 2**20  # far above any review's corrections; a bigger file is not one
BOX_TOLERANCE = 1.0  # pixels: cells.csv keeps boxes to 0.1 px


@dataclass(frozen=True)
class Correction:
    """One changed cell: where it is, what leuko said, what the person said."""

    photo: str
    box: tuple[float, float, float, float] | None  # None: the whole image is the cell
    predicted: str
    corrected: str
    when: str


def read_corrections(path: str | os.PathLike[str], classes: Sequence[str] | None = None
                     ) -> list[Correction]:
    """The rows of a corrections file; with `classes`, every corrected class must be one
    of them (case-insensitive, given back in their spelling) or a special answer."""
    p = Path(path)
    text = _read_text(p)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip() for c in rows[0]) != HEADER:
        raise LeukoError(f"{p} is not a leuko corrections file (its header must be "
                         f"{','.join(HEADER)}, as `{cmd('review')}` saves it)")
    spelled = {c.upper(): c for c in (*(classes or ()), *SPECIAL)}
    out: list[Correction] = []
    seen: dict[tuple[str, tuple[float, ...] | None], int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        c = _row(p, n, row, spelled if classes is not None else None)
        key = (c.photo, c.box)
        if key in seen:
            raise LeukoError(f"{p}: line {n} corrects the same cell as line {seen[key]}")
        seen[key] = n
        out.append(c)
    return out


def _read_text(p: Path) -> str:
    try:
        if p.stat().st_size > MAX_BYTES:
            raise LeukoError(f"{p} is not a leuko corrections file (over "
                             f"{MAX_BYTES // 2**20} MB)")
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LeukoError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise LeukoError(f"{p} is a folder, not a corrections file") from None
    except UnicodeDecodeError:
        raise LeukoError(f"{p} is not a leuko corrections file (not UTF-8 text)") from None
    except OSError as exc:
        raise LeukoError(f"{p}: cannot read ({exc.strerror or exc})") from None


def _row(p: Path, n: int, row: list[str], spelled: dict[str, str] | None) -> Correction:
    if len(row) != len(HEADER):
        raise LeukoError(f"{p}: line {n} has {len(row)} fields, not {len(HEADER)}")
    photo, *box_text, predicted, corrected, when = (v.strip() for v in row)
    if not photo:
        raise LeukoError(f"{p}: line {n} names no photo or image")
    if not corrected:
        raise LeukoError(f"{p}: line {n} has no corrected class")
    if spelled is not None:
        if corrected.upper() not in spelled:
            raise LeukoError(f"{p}: line {n} corrects to {corrected!r}, which is not one of "
                             f"{', '.join(spelled.values())}")
        corrected = spelled[corrected.upper()]
    return Correction(photo, _box(p, n, box_text), predicted, corrected, when)


def _box(p: Path, n: int, text: list[str]) -> tuple[float, float, float, float] | None:
    if not any(text):
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text)
    except ValueError:
        raise LeukoError(f"{p}: line {n} has a box that is not four numbers") from None
    if not all(math.isfinite(v) and v >= 0 for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise LeukoError(f"{p}: line {n} has an impossible box ({x0}, {y0}, {x1}, {y1})")
    return (x0, y0, x1, y1)


def same_photo(named: str, photo: str) -> bool:
    """Whether a row's photo is this photo: the same file, or (a path written from another
    folder) the same tail of path parts, the file name included."""
    a, b = Path(named), Path(photo)
    if a.resolve() == b.resolve():
        return True
    k = min(len(a.parts), len(b.parts))
    return a.parts[-k:] == b.parts[-k:]


@dataclass
class Relabelled:
    """What `--relabel` did to a dataset: the new dataset and what it changed."""

    data: Dataset
    changed: int  # images given another class
    excluded: int  # images left out: no white cell, or unclassifiable
    unmatched: list[Correction]  # rows naming no image of the dataset


def relabel_images(ds: Dataset, corrections: Sequence[Correction]) -> Relabelled:
    """The dataset with each corrected image's label replaced (NOT_WBC and UNCLASSIFIABLE
    images left out); rows are matched on the image's path, or a relative path on the one
    image whose path ends with it (`same_photo`). Smear cells (rows with a box) cannot
    relabel an image and are refused."""
    boxed = [c for c in corrections if c.box is not None]
    if boxed:
        raise LeukoError(f"{boxed[0].photo}: corrections of cells in smear photos (rows "
                         "with a box) relabel a count, not images: give them to "
                         f"`{cmd('count', corrections=True)}`")
    by_path = {str(Path(r.path).resolve()): i for i, r in enumerate(ds.records)}
    by_name: dict[str, list[int]] = {}
    for i, r in enumerate(ds.records):
        by_name.setdefault(Path(r.path).name, []).append(i)
    new: dict[int, str] = {}
    unmatched: list[Correction] = []
    for c in corrections:
        hit = by_path.get(str(Path(c.photo).resolve()))
        if hit is None and not Path(c.photo).is_absolute():  # the one image it can be
            tails = [i for i in by_name.get(Path(c.photo).name, [])
                     if same_photo(c.photo, str(ds.records[i].path))]
            hit = tails[0] if len(tails) == 1 else None
        if hit is None:
            unmatched.append(c)
        else:
            new[hit] = c.corrected
    records: list[Record] = []
    changed = excluded = 0
    for i, r in enumerate(ds.records):
        label = new.get(i, r.label)
        if label in SPECIAL:
            excluded += 1
            continue
        changed += int(label != r.label)
        records.append(Record(r.path, label, r.rel, r.group, r.extra))
    classes = sorted({r.label for r in records})
    data = Dataset(ds.root, ds.source, ds.layout, records, ds.problems, classes)
    return Relabelled(data, changed, excluded, unmatched)


def relabel_parts(parts: Sequence[Dataset], path: str | os.PathLike[str]
                  ) -> tuple[list[Dataset], dict[str, object]]:
    """`--relabel FILE` on the parts of one dataset (train and val, or all of it): every
    row must name an image of some part, so a file from another dataset is refused
    rather than silently doing nothing. Also returns what to record in leuko.json."""
    from .._util.files import file_sha256

    classes = sorted({c for d in parts for c in d.classes})
    fixes = read_corrections(path, classes)
    done = [relabel_images(d, fixes) for d in parts]
    missed = [set(r.unmatched) for r in done]
    unmatched = [c for c in fixes if all(c in m for m in missed)]
    if unmatched:
        raise ParameterError("relabel", f"{opt('relabel', path)}: {len(unmatched)} of its "
                                        f"{len(fixes)} rows name no image of this data "
                                        f"(first: {unmatched[0].photo})")
    if any(d.records and not r.data.records for d, r in zip(parts, done, strict=True)):
        raise ParameterError("relabel", f"{opt('relabel', path)} leaves no images")
    record = {"file": str(Path(path).resolve()), "sha256": file_sha256(Path(path)),
              "rows": len(fixes), "changed": sum(r.changed for r in done),
              "excluded": sum(r.excluded for r in done)}
    return [r.data for r in done], record
