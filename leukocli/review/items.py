"""What a person reviews: every cell leuko classified, read from the files a command wrote.

Three sources, each a proposal a person verifies: a count folder (cells.csv: cells cut
from smear photos), an audit folder (audit.csv: the images held-out models contradict,
proposed as their given label) and a predictions CSV (`leuko predict --format csv`). All three
are read as untrusted text: a file that is not what leuko writes is refused in one line,
and the paths in it are only ever opened as images, to cut thumbnails.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._util.files import read_json_object
from ..data.corrections import SPECIAL
from ..errors import LeukoError, cmd, first_line

CELLS_FILE, AUDIT_FILE, COUNTS_FILE = "cells.csv", "audit.csv", "counts.json"
MAX_ROWS = 200_000  # a page of more cells than this is no review; bigger files are not ours
# Panel order as a differential is read (CellaVision's); classes not named here follow.
LAB_ORDER = ("NEUTROPHIL", "SEGMENTED", "BAND", "LYMPHOCYTE", "MONOCYTE", "EOSINOPHIL",
             "BASOPHIL", "IG", "ERYTHROBLAST", "PLATELET")


@dataclass
class Item:
    """One cell to verify: where it is, what leuko proposed, what a person said already."""

    photo: str  # the smear photo (count) or the single-cell image
    box: tuple[float, float, float, float] | None  # in the photo; None: the whole image
    proposed: str  # leuko's class (an audit: the label the data gives)
    probability: float  # of `proposed`
    runner_up: str  # the model's next class ("" when unknown)
    runner_up_probability: float | None
    current: str  # the class now (a corrected count: the person's), else `proposed`
    corrected_at: str = ""


@dataclass
class Review:
    """The cells of one source and the classes a person may give them."""

    kind: str  # "count", "audit" or "predictions"
    source: Path
    classes: list[str]  # in the lab's order
    items: list[Item]

    @property
    def folder(self) -> Path:
        """The count or audit folder, or the one holding the predictions CSV."""
        return self.source if self.source.is_dir() else self.source.parent


def lab_order(classes: Sequence[str]) -> list[str]:
    """`classes` in the order a lab reads a differential; unknown names keep theirs."""
    rank = {name: i for i, name in enumerate(LAB_ORDER)}
    known = sorted((c for c in classes if c.upper() in rank), key=lambda c: rank[c.upper()])
    return known + [c for c in classes if c.upper() not in rank]


def gather(source: str | os.PathLike[str], top: int = 0) -> Review:
    """The cells of a count folder, an audit folder or a predictions CSV, least confident
    first (`top` > 0 keeps that many)."""
    p = Path(source)
    if p.is_dir():
        if (p / CELLS_FILE).is_file():
            review = _count(p)
        elif (p / AUDIT_FILE).is_file():
            review = _audit(p / AUDIT_FILE)
        else:
            raise LeukoError(f"{p} holds neither {CELLS_FILE} ({cmd('count')}) nor {AUDIT_FILE} "
                             f"({cmd('audit')})")
    elif p.is_file():
        review = _predictions(p)
    else:
        raise LeukoError(f"{p}: no such file or folder")
    review.items.sort(key=lambda it: (it.probability, it.photo, it.box or ()))
    if top > 0:
        review.items = review.items[:top]
    return review


def _rows(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LeukoError(f"{path} is not readable ({first_line(exc)})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise LeukoError(f"{path} is not {what} (no {', '.join(missing)} column)")
    rows = []
    for row in reader:
        rows.append({k: (v or "").strip() for k, v in row.items() if k is not None})
        if len(rows) > MAX_ROWS:
            raise LeukoError(f"{path} has over {MAX_ROWS:,} rows: review it in parts")
    if not rows:
        raise LeukoError(f"{path} has no cells to review")
    return rows


def _number(path: Path, row: dict[str, str], key: str) -> float:
    text = row.get(key, "")
    try:
        v = float(text)
    except ValueError:
        raise LeukoError(f"{path}: {key} {text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise LeukoError(f"{path}: {key} {text!r} is not a probability or a coordinate")
    return v


def _optional(path: Path, row: dict[str, str], key: str) -> float | None:
    """A number a row may leave empty (older files, a count without a second class)."""
    return _number(path, row, key) if row.get(key, "") else None


def _classes(path: Path, names: Sequence[str]) -> list[str]:
    """Class names checked as names: short, printable, not one of the special answers."""
    out = []
    for n in names:
        if not isinstance(n, str) or not n or len(n) > 64 or not n.isprintable():
            raise LeukoError(f"{path}: {str(n)[:40]!r} is not a class name")
        if n not in SPECIAL and n not in out:
            out.append(n)
    if not out:
        raise LeukoError(f"{path} names no class")
    return lab_order(out)


def _count(folder: Path) -> Review:
    path = folder / CELLS_FILE
    rows = _rows(path, ("photo", "x_min", "y_min", "x_max", "y_max", "class", "probability"),
                 f"the cells.csv of a {cmd('count')}")
    meta = folder / COUNTS_FILE
    named = read_json_object(meta, "count summary").get("classes") if meta.is_file() else None
    if not isinstance(named, list):
        named = sorted({r.get("predicted") or r["class"] for r in rows})
    classes = _classes(meta if meta.is_file() else path, named)
    items = []
    for r in rows:
        x0, y0, x1, y1 = (_number(path, r, k) for k in ("x_min", "y_min", "x_max", "y_max"))
        second = r.get("runner_up", "")
        items.append(Item(r["photo"], (x0, y0, x1, y1), r.get("predicted") or r["class"],
                          _number(path, r, "probability"), second,
                          _optional(path, r, "runner_up_probability") if second else None,
                          r["class"], r.get("corrected_at", "")))
    return Review("count", folder, classes, _known(path, items, classes))


def _audit(path: Path) -> Review:
    rows = _rows(path, ("path", "label", "predicted", "self_confidence", "suspect"),
                 f"the audit.csv of {cmd('audit')}")
    classes = _classes(path, sorted({r["label"] for r in rows} | {r["predicted"] for r in rows}))
    items = [Item(r["path"], None, r["label"], _number(path, r, "self_confidence"),
                  r["predicted"] if r["predicted"] != r["label"] else "", None, r["label"])
             for r in rows if r["suspect"].lower() in ("true", "1")]
    if not items:
        raise LeukoError(f"{path}: the audit found no suspect to review")
    return Review("audit", path.parent, classes, _known(path, items, classes))


def _predictions(path: Path) -> Review:
    rows = _rows(path, ("path", "predicted", "probability"), "leuko predictions "
                 f"({cmd('predict', '...', format='csv')} > FILE.csv)")
    probs = [k for k in rows[0] if k.startswith("prob_")]
    classes = _classes(path, [k[len("prob_"):] for k in probs] or
                       sorted({r["predicted"] for r in rows}))
    items = []
    for r in rows:
        second, p2 = _runner_up(path, r, probs)
        items.append(Item(r["path"], None, r["predicted"], _number(path, r, "probability"),
                          second, p2, r["predicted"]))
    return Review("predictions", path, classes, _known(path, items, classes))


def _runner_up(path: Path, row: dict[str, str], probs: Sequence[str]
               ) -> tuple[str, float | None]:
    if row.get("top2"):
        return row["top2"], _optional(path, row, "top2_probability")
    ranked = sorted(((_number(path, row, k), k[len("prob_"):]) for k in probs), reverse=True)
    return (ranked[1][1], ranked[1][0]) if len(ranked) > 1 else ("", None)


def _known(path: Path, items: list[Item], classes: Sequence[str]) -> list[Item]:
    allowed = {*classes, *SPECIAL, ""}
    for it in items:
        for name in (it.proposed, it.current, it.runner_up):
            if name not in allowed:
                raise LeukoError(f"{path}: class {name[:40]!r} is not one of the page's "
                                 f"classes ({', '.join(classes)})")
    return items
