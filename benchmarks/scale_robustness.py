"""Does framing change the answer? The same held-out cells, re-framed, against the originals.

For every fold of a `leuko cv` run, its held-out images are scored as they are and
re-framed three ways, each resized back to the original size: a centre crop around the
stained cell to 50% and to 70% of the field (the cell looks 2x and 1.4x larger), and the
field padded out to 150% with its own background colour (the cell looks 1.5x smaller).
Each fold's own model scores its own held-out images, so every figure is out of fold;
the baseline is the originals' accuracy in the same run.

    python benchmarks/scale_robustness.py --run runs/cv-... [--limit 400]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _common import machine
from PIL import Image

VARIANTS = ("original", "crop50", "crop70", "pad150")


def reframe(img: Image.Image, centre: tuple[float, float], how: str) -> Image.Image:
    """One framing of a photo, at the photo's own size."""
    w, h = img.size
    if how == "original":
        return img
    if how.startswith("crop"):
        share = int(how[4:]) / 100.0
        cw, ch = round(w * share), round(h * share)
        cy, cx = centre
        left = int(np.clip(cx - cw / 2, 0, w - cw))
        top = int(np.clip(cy - ch / 2, 0, h - ch))
        return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BILINEAR)
    big = Image.new("RGB", (round(w * 1.5), round(h * 1.5)),
                    tuple(int(v) for v in np.median(np.asarray(img).reshape(-1, 3), axis=0)))
    big.paste(img, ((big.width - w) // 2, (big.height - h) // 2))
    return big.resize((w, h), Image.Resampling.BILINEAR)


def score_fold(fold: Path, limit: int) -> dict[str, list[int]]:
    from leukocli.counting.locate import stain_map
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.layers import STAIN_OFFSET

    bundle = load_bundle(fold)
    val = pd.read_csv(fold / "val.csv")
    if limit and len(val) > limit:
        val = val.sample(limit, random_state=0)
    right: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for a in range(0, len(val), 32):
        part = val.iloc[a : a + 32]
        imgs = [Image.open(p).convert("RGB") for p in part.path]
        centres = []
        for im in imgs:
            s = stain_map(np.asarray(im, np.float32), STAIN_OFFSET)
            ys, xs = np.nonzero(s > 0.5 * s.max()) if s.max() > 0 else ([im.height / 2],
                                                                         [im.width / 2])
            centres.append((float(np.mean(ys)), float(np.mean(xs))))
        for how in VARIANTS:
            x = np.stack([np.asarray(reframe(im, c, how).resize(
                (bundle.img_size[1], bundle.img_size[0]), Image.Resampling.BILINEAR), np.float32)
                for im, c in zip(imgs, centres, strict=True)])
            called = np.asarray(bundle.model.predict_on_batch(x)).argmax(1)
            right[how] += [int(bundle.classes[i] == lab) for i, lab in zip(called, part.label,
                                                                           strict=True)]
    return right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, required=True, help="a collected leuko cv run")
    ap.add_argument("--limit", type=int, default=0, help="images per fold (0: all)")
    args = ap.parse_args()
    per_fold = {}
    total: dict[str, list[int]] = {v: [] for v in VARIANTS}
    for fold in sorted(args.run.glob("fold-*")):
        right = score_fold(fold, args.limit)
        per_fold[fold.name] = {v: round(float(np.mean(r)), 4) for v, r in right.items()}
        for v in VARIANTS:
            total[v] += right[v]
    acc = {v: round(float(np.mean(r)), 4) for v, r in total.items()}
    out = {"benchmark": "scale_robustness", "run": str(args.run), "images": len(total["original"]),
           "accuracy": acc, "points_vs_original": {v: round(100 * (acc[v] - acc["original"]), 2)
                                                    for v in VARIANTS[1:]},
           "per_fold": per_fold, "machine": machine()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
