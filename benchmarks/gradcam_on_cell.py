"""Where does the model look? The share of held-out images whose Grad-CAM peak lies on
the stained white cell (the connected purple region at the cell crop's centre, slightly
grown to take in its cytoplasm), for every fold of a leuko cv run.

    python benchmarks/gradcam_on_cell.py --run runs/cv-... [--limit 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from _common import machine


def cell_mask(image: np.ndarray, centre: tuple[float, float], grow: int = 6) -> np.ndarray:
    """The stained region containing (or nearest) the crop's centre, grown by `grow` px."""
    from scipy import ndimage

    from leukocli.counting.locate import stain_map
    from leukocli.modeling.layers import STAIN_OFFSET

    stain = stain_map(image, STAIN_OFFSET) > 0.5
    labels, n = ndimage.label(stain)
    if n == 0:
        return np.zeros(stain.shape, bool)
    cy, cx = (int(round(v)) for v in centre)
    cy, cx = min(max(cy, 0), stain.shape[0] - 1), min(max(cx, 0), stain.shape[1] - 1)
    which = labels[cy, cx]
    if which == 0:  # the centre fell between lobes: the nearest stained component
        dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        which = labels[iy[cy, cx], ix[cy, cx]]
    return ndimage.binary_dilation(labels == which, iterations=grow)


def main() -> None:
    from leukocli.evaluation.explain import explain
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.runtimes import load_images

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200, help="images per fold")
    args = ap.parse_args()
    hits, total, per_fold = 0, 0, {}
    for fold in sorted(args.run.glob("fold-*")):
        bundle = load_bundle(fold)
        val = pd.read_csv(fold / "val.csv").sample(frac=1.0, random_state=0).head(args.limit)
        crop = bundle.model.get_layer("cell_crop")
        fold_hits = 0
        for a in range(0, len(val), 16):
            x = load_images(list(val.path[a : a + 16]), bundle.img_size)
            ex = explain(bundle, x)
            cy, cx, _ = (np.asarray(t) for t in crop.locate(x))
            for i in range(len(x)):
                peak = np.unravel_index(int(ex.maps[i].argmax()), ex.maps[i].shape)
                fold_hits += bool(cell_mask(x[i], (cy[i], cx[i]))[peak])
        per_fold[fold.name] = round(fold_hits / len(val), 4)
        hits += fold_hits
        total += len(val)
    print(json.dumps({"benchmark": "gradcam_on_cell", "run": str(args.run), "images": total,
                      "peak_on_stained_cell": round(hits / max(total, 1), 4),
                      "per_fold": per_fold, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
