"""Differential counts from whole smear photos: locate every white cell, classify each.

Each located cell is cut out as a window of the model's input shape centred on it, about
2.2 cell diameters tall, so the model sees one cell large and in the middle, as in the
single-cell images it learned from (its own cell crop then frames it). Outputs are plain
files: cells.csv (one row per cell), counts.csv / counts.json (per photo and in total)
and an annotated PNG per photo.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .._util.files import atomic_write
from .._util.progress import SILENT, Reporter
from ..data.corrections import NOT_WBC
from ..data.images import open_rgb
from ..errors import first_line
from ..modeling.bundle import Bundle
from .locate import Located, LocatorParams, locate_cells, match
from .voc import annotation_for, read_voc

CELL_COLUMNS = ("photo", "x_min", "y_min", "x_max", "y_max", "confidence", "class",
                "probability", "runner_up", "runner_up_probability", "predicted",
                "corrected_at")
WINDOW = 2.2  # window height / cell box side
COLOURS = [(220, 60, 60), (60, 120, 220), (40, 160, 80), (200, 140, 20), (150, 60, 190),
           (20, 160, 170), (120, 120, 120), (230, 100, 180)]


@dataclass
class CountedCell:
    photo: str
    box: tuple[float, float, float, float]
    confidence: float
    label: str  # the class counted: the model's, or the person's after a review
    probability: float  # the model's probability of the class it predicted
    runner_up: str = ""  # the model's second class ("" without a model)
    runner_up_probability: float = 0.0
    predicted: str = ""  # the model's class ("": as `label`, nobody corrected it)
    corrected_at: str = ""  # when a person gave `label` ("" if nobody did)

    @property
    def proposed(self) -> str:
        """What leuko said, whatever a person said since."""
        return self.predicted or self.label


def window(photo: np.ndarray, cell: Located, size: tuple[int, int]) -> np.ndarray:
    """The model-shaped window around one cell, black beyond the photo's edge."""
    h, w = size
    x0, y0, x1, y1 = cell.box
    wh = WINDOW * max(x1 - x0, y1 - y0)
    ww = wh * w / h
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(round(cy - wh / 2)), int(round(cx - ww / 2))
    out = np.zeros((int(round(wh)), int(round(ww)), 3), np.uint8)
    ph, pw = photo.shape[:2]
    sy0, sx0 = max(0, top), max(0, left)
    sy1, sx1 = min(ph, top + out.shape[0]), min(pw, left + out.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = photo[sy0:sy1, sx0:sx1]
    resized = Image.fromarray(out).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.float32)


def count_photo(path: Path, bundle: Bundle | None, params: LocatorParams
                ) -> list[CountedCell]:
    """Locate and classify the white cells of one photo (no model: located only)."""
    rgb = open_rgb(path)
    cells = locate_cells(rgb, params)
    if not cells:
        return []
    if bundle is None:
        return [CountedCell(str(path), c.box, c.confidence, "WBC", c.confidence) for c in cells]
    arr = np.asarray(rgb, np.uint8)
    x = np.stack([window(arr, c, bundle.img_size) for c in cells])
    probs = np.asarray(bundle.model.predict_on_batch(x), np.float32)
    return [_classified(str(path), c, p, bundle.classes) for c, p in zip(cells, probs,
                                                                          strict=True)]


def _classified(photo: str, cell: Located, p: np.ndarray, classes: Sequence[str]
                ) -> CountedCell:
    first, second = (int(i) for i in np.argsort(-p, kind="stable")[:2])
    return CountedCell(photo, cell.box, cell.confidence, classes[first], float(p[first]),
                       classes[second], float(p[second]))


def count_photos(paths: Sequence[Path], bundle: Bundle | None, params: LocatorParams,
                 reporter: Reporter = SILENT) -> tuple[list[CountedCell], list[tuple[str, str]]]:
    """Every photo's cells; photos that cannot be read become (path, reason) errors."""
    cells: list[CountedCell] = []
    errors: list[tuple[str, str]] = []
    with reporter.task("counting", len(paths)) as advance:
        for p in paths:
            try:
                cells += count_photo(p, bundle, params)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                errors.append((str(p), f"unreadable ({first_line(exc)})"))
            advance()
    return cells, errors


def counts(cells: Sequence[CountedCell], photos: Sequence[Path], classes: Sequence[str]
           ) -> dict[str, Any]:
    """Per photo and in total: count and percentage per class (photos with none included)."""
    def tally(mine: Sequence[CountedCell]) -> dict[str, Any]:
        per = {c: sum(1 for x in mine if x.label == c) for c in classes}
        n = sum(per.values())  # a cell a person called no white cell is not counted
        return {"cells": n, "count": per,
                "percent": {c: round(100.0 * v / n, 2) if n else 0.0 for c, v in per.items()}}

    by_photo = {str(p): [c for c in cells if c.photo == str(p)] for p in photos}
    return {"classes": list(classes), "photos": {p: tally(v) for p, v in by_photo.items()},
            "total": tally(list(cells))}


def cells_csv(cells: Sequence[CountedCell]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CELL_COLUMNS)
    for c in cells:
        w.writerow([c.photo, *(round(v, 1) for v in c.box), c.confidence, c.label,
                    round(c.probability, 6), c.runner_up, round(c.runner_up_probability, 6),
                    c.proposed, c.corrected_at])
    return buf.getvalue()


def counts_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    classes = summary["classes"]
    w.writerow(["photo", "cells", *classes, *[f"{c}_percent" for c in classes]])
    rows = [*summary["photos"].items(), ("TOTAL", summary["total"])]
    for name, t in rows:
        w.writerow([name, t["cells"], *[t["count"][c] for c in classes],
                    *[t["percent"][c] for c in classes]])
    return buf.getvalue()


def annotate(path: Path, cells: Sequence[CountedCell], classes: Sequence[str], out: Path
             ) -> None:
    """The photo with each cell's box, coloured by class, and its label."""
    img = open_rgb(path)
    draw = ImageDraw.Draw(img)
    width = max(2, round(min(img.size) / 160))
    for c in cells:
        colour = COLOURS[classes.index(c.label) % len(COLOURS)] if c.label in classes else (0,
                                                                                          0, 0)
        draw.rectangle(c.box, outline=colour, width=width)
        text = f"{c.label} {c.probability:.2f}"
        tx, ty = c.box[0] + width, max(0.0, c.box[1] - 12 - width)
        draw.rectangle((tx - 1, ty - 1, tx + 7 * len(text), ty + 11), fill=(255, 255, 255))
        draw.text((tx, ty), text, fill=colour)
    atomic_write(out, lambda tmp: img.save(tmp, format="PNG"))


def evaluate_counts(cells: Sequence[CountedCell], photos: Sequence[Path],
                    classes: Sequence[str]) -> dict[str, Any]:
    """Detection precision and recall at IoU 0.5, and, where annotations (or BCCD's
    labels.csv) name each white cell's class, the accuracy of the counted cells' classes."""
    tp = fp = fn = right = named = 0
    no_annotation = 0
    for photo in photos:
        xml = annotation_for(photo)
        if xml is None:
            no_annotation += 1
            continue
        truth = _named_truth(xml, photo, set(classes))
        # a cell a person called no white cell is not the count's detection any more
        mine = [c for c in cells if c.photo == str(photo) and c.label != NOT_WBC]
        pairs = match([b for _, b in truth], [c.box for c in mine])
        tp += len(pairs)
        fn += len(truth) - len(pairs)
        fp += len(mine) - len(pairs)
        for i, j in pairs:
            if truth[i][0] in classes:
                named += 1
                right += int(mine[j].label == truth[i][0])
    return {"photos_evaluated": len(photos) - no_annotation, "true_positives": tp,
            "false_positives": fp, "missed": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0,
            "classified": named,
            "class_accuracy": round(right / named, 4) if named else None}


def _named_truth(xml: Path, photo: Path, classes: set[str]
                 ) -> list[tuple[str, tuple[float, ...]]]:
    """VOC truth, with a class name from labels.csv (BCCD) when the photo has one cell."""
    truth = read_voc(xml)
    labels = xml.parent.parent / "labels.csv"
    if len(truth) == 1 and truth[0][0] not in classes and labels.is_file():
        for row in csv.DictReader(labels.open()):
            if row.get("image") == photo.stem:
                names = [n.strip() for n in row.get("wbc_classes", "").split(",") if n.strip()]
                if len(names) == 1:
                    truth = [(names[0], truth[0][1])]
    return truth
