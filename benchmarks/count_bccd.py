"""leuko count on BCCD's whole smear photos: white-cell detection precision and recall at
IoU 0.5 (all photos, and the even/odd halves the locator's constants were chosen/measured
on), class accuracy of one-cell photos, and photos per second against the locator alone.

    python benchmarks/count_bccd.py --data ../shared/data/bccd --model runs/latest
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import machine


def main() -> None:
    from leukocli.evaluation.count import count_photos, evaluate_counts
    from leukocli.evaluation.locate import LocatorParams, locate_cells
    from leukocli.modeling.bundle import load_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True, help="BCCD: JPEGImages/, Annotations/")
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    photos = sorted((args.data / "JPEGImages").glob("*.jpg"))
    params = LocatorParams()
    start = time.perf_counter()
    for p in photos:
        from PIL import Image

        with Image.open(p) as im:
            locate_cells(im.convert("RGB"), params)
    locate_rate = len(photos) / (time.perf_counter() - start)
    bundle = load_bundle(args.model) if args.model else None
    start = time.perf_counter()
    cells, errors = count_photos(photos, bundle, params)
    count_rate = len(photos) / (time.perf_counter() - start)
    classes = list(bundle.classes) if bundle else ["WBC"]
    out = {"benchmark": "count_bccd", "photos": len(photos), "unreadable": len(errors),
           "all": evaluate_counts(cells, photos, classes),
           "even (constants chosen here)": evaluate_counts(cells, photos[0::2], classes),
           "odd (held out)": evaluate_counts(cells, photos[1::2], classes),
           "locate_photos_per_s": round(locate_rate, 1),
           "count_photos_per_s": round(count_rate, 1),
           "count_vs_locate_ratio": round(count_rate / locate_rate, 2),
           "model": str(args.model) if args.model else None, "machine": machine()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
