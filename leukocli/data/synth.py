"""Synthetic datasets on disk: the demo data and the test fixtures.

Smears drawn by `smear` are written as a class-folder tree that mimics the real Kaggle
"Blood Cell Images" data: augmented siblings of one smear with uninformative file names
(ground truth in OUT/sources.csv), and planted duplicates, near copies, a label
conflict, name collisions and a corrupt file (OUT/planted.json), so every later command
has something real to find. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._util.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, ParameterError, opt
from .render import (
    CLASSES,
    MIN_SIZE,
    NEAR_TRANSFORMS,
    augment_view,
    jpeg_bytes,
    near_copy,
    render_smear,
)


# --------------------------------------------------------------------------- dataset
class _Names:
    """File names like the real data's `_<k>_<nnnn>.jpeg`: no hint of the source, and
    unique across the whole tree so the only cross-class collisions are planted ones."""

    def __init__(self, rng: np.random.Generator, per_k: int) -> None:
        self._rng = rng
        self._high = max(10_000, 1000 + 4 * per_k)
        self._used: set[str] = set()

    def new(self, k: int) -> str:
        while True:
            name = f"_{k}_{int(self._rng.integers(1000, self._high))}.jpeg"
            if name not in self._used:
                self._used.add(name)
                return name


@dataclass
class _Item:
    label: str
    name: str
    source: str
    data: bytes

    @property
    def rel(self) -> str:
        return f"{self.label}/{self.name}"


def make_dataset(
    out: Path,
    per_class: int = 30,
    size: tuple[int, int] = (240, 320),
    seed: int = 0,
    siblings: int = 1,
    plant: bool = True,
    reporter: Reporter = SILENT,
) -> dict[str, Any]:
    """Write a synthetic class-folder dataset under `out` and return what was written.

    `per_class` distinct smears per class, each saved `siblings` times (1 = the smear
    itself; more = augmented views with names that hide the source). The returned dict
    holds root, classes, counts (files per class folder), images, smears, siblings and
    planted (the content of OUT/planted.json, empty lists when plant=False).
    """
    check_synth_options(per_class, size, siblings, plant)
    out = Path(out)
    rng = np.random.default_rng(seed)
    names = _Names(np.random.default_rng([seed, 1]), per_class * len(CLASSES) + 16)
    smear_items = _render_all(per_class, size, seed, siblings, names, reporter)
    items = [it for files in smear_items for it in files]
    planted: dict[str, Any] = {k: [] for k in PLANTED_KINDS}
    corrupt_rel = _plant(items, smear_items, names, rng, planted) if plant else None
    _write(out, items, corrupt_rel, planted)
    counts = {c: sum(1 for it in items if it.label == c) for c in CLASSES}
    return {
        "root": str(out), "classes": list(CLASSES), "counts": counts, "images": len(items),
        "smears": per_class * len(CLASSES), "siblings": siblings, "size": list(size),
        "seed": seed, "planted": planted,
    }


PLANTED_KINDS = ("exact", "near", "conflict", "name_collisions", "corrupt")
WRITTEN_BESIDE = ("sources.csv", "planted.json")


def check_synth_options(
    per_class: int, size: tuple[int, int], siblings: int, plant: bool
) -> None:
    """Every check on synth's options, before anything is drawn."""
    if per_class < 1:
        raise ParameterError("per_class",
                             f"{opt('per_class')} must be at least 1 (got {per_class})")
    if siblings < 1:
        raise ParameterError("siblings", f"{opt('siblings')} must be at least 1 (got {siblings})")
    h, w = size
    if h < MIN_SIZE or w < MIN_SIZE:
        raise LeukoError(f"image size {h}x{w} is below the minimum of {MIN_SIZE}x{MIN_SIZE}")
    if plant and per_class < 3:
        raise ParameterError("per_class", f"planting needs {opt('per_class', 3)} or more (got "
                                          f"{per_class}); or use {opt('plant', False)}")


def _render_all(
    per_class: int, size: tuple[int, int], seed: int, siblings: int, names: _Names,
    reporter: Reporter,
) -> list[list[_Item]]:
    """The files of each smear, in smear-id order."""
    smear_items: list[list[_Item]] = []
    with reporter.task("rendering smears", per_class * len(CLASSES)) as advance:
        for ci, label in enumerate(CLASSES):
            for i in range(per_class):
                sid = f"smear_{ci * per_class + i:04d}"
                # each smear has its own stream, so it does not depend on per_class
                srng = np.random.default_rng([seed, ci, i])
                base = render_smear(label, size, srng)
                views = (
                    [base] if siblings == 1 else [augment_view(base, srng) for _ in range(siblings)]
                )
                smear_items.append(
                    [_Item(label, names.new(k), sid, jpeg_bytes(v)) for k, v in enumerate(views)]
                )
                advance()
    return smear_items


def _write(out: Path, items: list[_Item], corrupt_rel: str | None, planted: dict[str, Any]) -> None:
    """Write the tree; never replace an existing image that differs (it may be the user's)."""
    clashes = [
        it.rel for it in items if (out / it.rel).exists() and (out / it.rel).read_bytes() != it.data
    ]
    if clashes:
        raise LeukoError(
            f"{out} already holds {len(clashes)} different file(s) where synth would write "
            f"(e.g. {clashes[0]}); nothing was written: choose a new folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for label in CLASSES:
            (out / label).mkdir(exist_ok=True)
        for item in items:
            target = out / item.rel
            if not target.exists():  # an identical file from the same seed stays as it is
                atomic_write_bytes(target, item.data)
    except OSError as exc:
        raise LeukoError(f"cannot write {out}: {exc.strerror or exc}") from None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "source"])
    for item in sorted(items, key=lambda it: it.rel):
        if item.rel != corrupt_rel:
            writer.writerow([item.rel, item.source])
    atomic_write_text(out / "sources.csv", buf.getvalue())
    atomic_write_json(out / "planted.json", planted)


def _plant(
    items: list[_Item],
    smear_items: list[list[_Item]],
    names: _Names,
    rng: np.random.Generator,
    planted: dict[str, Any],
) -> str:
    """Add the planted cases to `items` (recording them in `planted`); return the corrupt rel."""
    # Smear 0 and 1 of every class carry the copies (each its own source); the last smear
    # of some classes takes part in a name collision, so the cases never overlap.
    per_class = len(smear_items) // len(CLASSES)
    order = [ci * per_class + i for i in (0, 1) for ci in range(len(CLASSES))]
    chosen = [smear_items[s][0] for s in order]

    def add(orig: _Item, label: str, data: bytes) -> _Item:
        copy = _Item(label, names.new(int(orig.name.split("_")[1])), orig.source, data)
        items.append(copy)
        return copy

    for orig in chosen[:2]:
        planted["exact"].append([orig.rel, add(orig, orig.label, orig.data).rel])
    for orig, transform in zip(chosen[2:7], NEAR_TRANSFORMS, strict=True):
        copy = add(orig, orig.label, near_copy(orig.data, transform, rng))
        planted["near"].append({"original": orig.rel, "copy": copy.rel, "transform": transform})
    orig = chosen[-1]
    other = CLASSES[(CLASSES.index(orig.label) + 1) % len(CLASSES)]
    planted["conflict"].append([orig.rel, add(orig, other, orig.data).rel])

    # Name collisions: an image in one class takes the name of a different picture in another.
    for a_label, b_label in (("EOSINOPHIL", "NEUTROPHIL"), ("LYMPHOCYTE", "MONOCYTE")):
        a_item = smear_items[(CLASSES.index(a_label) + 1) * per_class - 1][0]
        b_item = smear_items[(CLASSES.index(b_label) + 1) * per_class - 1][0]
        b_item.name = a_item.name
        planted["name_collisions"].append([a_item.rel, b_item.rel])

    # A file that claims to be a JPEG but stops after its header.
    donor = smear_items[0][0]
    bad = _Item(donor.label, names.new(0), "", donor.data[:600] + bytes(64))
    items.append(bad)
    planted["corrupt"].append(bad.rel)
    return bad.rel


FIELD_UNIT = 2.6  # cell scale of synthetic fields: white cells about 0.4 of 480 px, as BCCD's


def make_fields(out: Path, n: int = 8, size: tuple[int, int] = (480, 640), seed: int = 0,
                max_cells: int = 3, unit: float = FIELD_UNIT, reporter: Reporter = SILENT
                ) -> list[dict[str, Any]]:
    """Whole fields of view in Pascal VOC layout (JPEGImages/, Annotations/): 0 to
    `max_cells` white cells each, boxed and named by class; what `leuko count` reads."""
    from .render import random_field

    rng = np.random.default_rng([seed, 7])
    made = []
    with reporter.task("rendering fields", n) as advance:
        for i in range(n):
            k = int(rng.integers(0, max_cells + 1))
            img, cells = random_field(size, k, rng, unit=unit)
            name = f"field_{i:04d}"
            atomic_write_bytes(out / "JPEGImages" / f"{name}.jpg", jpeg_bytes(img))
            atomic_write_text(out / "Annotations" / f"{name}.xml",
                              _voc(name, size, [(c.label, c.box) for c in cells]))
            made.append({"name": name, "cells": [(c.label, c.box) for c in cells]})
            advance()
    return made


def _voc(name: str, size: tuple[int, int], cells: list[tuple[str, tuple[float, ...]]]) -> str:
    objects = "".join(
        f"  <object><name>{label}</name><bndbox><xmin>{b[0]:.0f}</xmin><ymin>{b[1]:.0f}</ymin>"
        f"<xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax></bndbox></object>\n"
        for label, b in cells
    )
    return (f"<annotation>\n  <filename>{name}.jpg</filename>\n  <size><width>{size[1]}"
            f"</width><height>{size[0]}</height><depth>3</depth></size>\n{objects}"
            "</annotation>\n")
