"""Other microscopes, simulated: held-out cells re-photographed the ways labs differ.

We are measured on microscopes we do not have: tight crops on yellow, white and grey
backgrounds, and whole 640x480 fields on blue-green and pink. This puts the same
held-out cells (none of their source photos trained the models) through those
conditions and scores each model on every one, against the originals in the same run:

    original     the photo as it is (re-saved as JPEG at quality 92, as all of them)
    tight-*      the located cell cut out with a small margin (the cell fills the crop),
                 the light re-balanced so the background is yellow, white or grey
    field-*      the photo in the middle of a 640x480 field of its own background (the
                 cell a small part of the view), the background blue-green or pink
    lowres-jpeg  the photo at half resolution, back up, saved at JPEG quality 60

Colour changes are per-channel gains that take the photo's background (the median of
its brightest fifth) to the target, as a lamp, filter or camera white balance does:
the cell's colours move with it. This is a proxy for the real microscopes, not a
replacement: a model trained with the `domain` augmentation has seen shifts of this
kind, so read the figures as a check that nothing collapses, and rank models by them
only together with the real held-out domains.

    python benchmarks/wbc_model.py --data ../shared/data --out wbc-build   # manifests
    python benchmarks/lab_shift.py --build wbc-build --model wbc --model RUN --per 100

Prints one table (accuracy per model and condition, and the ratio to the original) and
writes OUT/lab_shift.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

SHARED = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
BACKGROUNDS = {
    "tight-yellow": (232, 214, 140),
    "tight-white": (246, 246, 244),
    "tight-grey": (168, 168, 168),
    "field-bluegreen": (150, 204, 196),
    "field-pink": (236, 186, 204),
}
CONDITIONS = ("original", *BACKGROUNDS, "lowres-jpeg")
FIELD = (640, 480)
RENDER = 2  # how the images are made; 2: the field's seam outside the photo, not over it


def background(rgb: np.ndarray) -> np.ndarray:
    """The plasma between the cells: the median colour of the brightest fifth."""
    bright = rgb.mean(axis=-1)
    return np.median(rgb[bright >= np.percentile(bright, 80)], axis=0)


def recolour(rgb: np.ndarray, target: tuple[int, int, int]) -> np.ndarray:
    gain = np.asarray(target, np.float32) / np.maximum(background(rgb), 1.0)
    return np.clip(rgb * gain, 0, 255)


def tight(img: Image.Image) -> Image.Image:
    """The located cell with a tenth of its size as margin (the whole photo if none)."""
    from leukocli.counting.locate import locate_cells

    found = locate_cells(img)
    if not found:
        return img
    x0, y0, x1, y1 = found[0].box
    m = 0.1 * max(x1 - x0, y1 - y0)
    return img.crop((max(0, round(x0 - m)), max(0, round(y0 - m)),
                     min(img.width, round(x1 + m)), min(img.height, round(y1 + m))))


def field(rgb: np.ndarray, seam: int = 16) -> np.ndarray:
    """The photo in the middle of a 640x480 field of its own background: the cell becomes a
    small part of a wide view, as in a whole-field photo. The seam is feathered over `seam`
    pixels outside the photo (its edge pixels drawn out and faded into the field), so every
    pixel of the photo is kept: fading its own border would fade a cell near the edge."""
    h, w = rgb.shape[:2]
    scale = min((FIELD[1] - 2 * seam) / h, (FIELD[0] - 2 * seam) / w, 1.0)
    if scale < 1.0:
        rgb = np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize(
            (round(w * scale), round(h * scale)), Image.Resampling.BILINEAR), np.float32)
    out = np.empty((FIELD[1], FIELD[0], 3), np.float32)
    out[:] = background(rgb)
    drawn = np.pad(rgb, ((seam, seam), (seam, seam), (0, 0)), mode="edge")
    h, w = drawn.shape[:2]
    ramp = np.minimum(1.0, np.minimum.outer(np.minimum(np.arange(h), np.arange(h)[::-1]),
                                            np.minimum(np.arange(w), np.arange(w)[::-1])) / seam)
    top, left = (FIELD[1] - h) // 2, (FIELD[0] - w) // 2
    window = out[top : top + h, left : left + w]
    window[:] = ramp[..., None] * drawn + (1 - ramp[..., None]) * window
    return out


def render(img: Image.Image, how: str) -> Image.Image:
    if how == "original":
        return img
    if how == "lowres-jpeg":
        small = img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR)
        return small.resize(img.size, Image.Resampling.BILINEAR)
    if how.startswith("tight-"):
        rgb = np.asarray(tight(img), np.float32)
    else:
        rgb = field(np.asarray(img, np.float32))
    return Image.fromarray(recolour(rgb, BACKGROUNDS[how]).astype(np.uint8))


def cells(build: Path, per: int, seed: int) -> pd.DataFrame:
    """Up to `per` held-out images per shared class from each domain."""
    parts = []
    for domain in ("pbc", "bc"):
        v = pd.read_csv(build / f"val-{domain}.csv")
        for label in SHARED:
            g = v[v.label == label]
            parts.append(g.sample(min(per, len(g)), random_state=seed).assign(domain=domain))
    return pd.concat(parts, ignore_index=True)


def make_sets(table: pd.DataFrame, work: Path) -> dict[str, list[str]]:
    """One JPEG (quality 92, the original too; 60 for lowres-jpeg) per cell and condition,
    made once: images made for other cells (another --per, --seed or --build) or by an
    earlier RENDER are removed."""
    import shutil

    listing, stamp = work / "cells.csv", work / "render.txt"
    if work.exists() and (not listing.is_file() or not stamp.is_file()
                          or listing.read_text() != table.to_csv(index=False)
                          or stamp.read_text() != str(RENDER)):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    listing.write_text(table.to_csv(index=False))
    stamp.write_text(str(RENDER))
    out: dict[str, list[str]] = {c: [] for c in CONDITIONS}
    for i, path in enumerate(table.path):
        with Image.open(path) as src:
            img = src.convert("RGB")
        for how in CONDITIONS:
            dest = work / how / f"{i:05d}.jpg"
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                render(img, how).save(dest, quality=60 if how == "lowres-jpeg" else 92)
            out[how].append(str(dest))
    return out


def score(model: str, table: pd.DataFrame, sets: dict[str, list[str]]) -> dict[str, Any]:
    import leukocli as lk

    bundle = lk.load_model(model)
    res: dict[str, Any] = {}
    for how, files in sets.items():
        pred = lk.predict(files, model=bundle)
        probs = pred[[f"prob_{c}" for c in SHARED]].to_numpy()  # among the data's classes
        called = np.asarray(SHARED)[probs.argmax(1)]
        right = called == table.label.to_numpy()
        res[how] = {d: float(right[(table.domain == d).to_numpy()].mean())
                    for d in ("pbc", "bc")}
        res[how]["all"] = float(right.mean())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", type=Path, default=Path("wbc-build"),
                    help="wbc_model.py's folder: val-pbc.csv and val-bc.csv")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--per", type=int, default=100, help="cells per class and domain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("lab-shift"))
    a = ap.parse_args()
    table = cells(a.build, a.per, a.seed)
    t0 = time.perf_counter()
    sets = make_sets(table, a.out / "images")
    made = time.perf_counter() - t0
    results = {m: score(m, table, sets) for m in a.model}
    print(f"{'condition':<16}" + "".join(f"{Path(m).name[:22]:>24}" for m in a.model),
          file=sys.stderr)
    for how in CONDITIONS:
        row = ""
        for m in a.model:
            r, base = results[m][how], results[m]["original"]["all"]
            row += f"{100 * r['pbc']:6.1f}/{100 * r['bc']:5.1f} ({r['all'] / base:4.2f}x)".rjust(24)
        print(f"{how:<16}{row}", file=sys.stderr)
    print("(per cell: PBC / blood-cells held out, 4 classes; ratio of both to the original)",
          file=sys.stderr)
    doc = {"cells": {d: int((table.domain == d).sum()) for d in ("pbc", "bc")},
           "conditions": list(CONDITIONS), "results": results,
           "make_s": round(made, 1), "machine": machine()}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "lab_shift.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
