"""leuko count on BCCD's whole smear photos: white-cell detection precision and recall at
IoU 0.5 (all photos, and the even/odd halves the locator's constants were chosen/measured
on), class accuracy of one-cell photos, and photos per second against the locator alone.

BCCD's photos are the blood-cells dataset's source photos, so a blood-cells model has
trained on most of them; `--unseen VAL.csv --sources sources.csv` also scores only the
photos whose source is in that manifest (e.g. a cv fold's held-out `val.csv`).

    python benchmarks/count_bccd.py --data ../shared/data/bccd --model runs/latest
    python benchmarks/count_bccd.py --data ../shared/data/bccd --model RUN/fold-0 \
        --unseen RUN/fold-0/val.csv --sources ../shared/data/blood-cells/sources.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _common import class_file_key, machine, read_sources


def _unseen(manifest: Path | None, sources: Path | None, cells: list[Any],
            photos: list[Path], classes: list[str]) -> dict[str, Any]:
    """Scores on the photos whose source photo the model never trained on."""
    if manifest is None or sources is None:
        return {}
    import pandas as pd

    from leukocli.counting.count import evaluate_counts

    truth = read_sources(sources)
    keys = set(class_file_key(pd.read_csv(manifest)["path"]))
    names = set(truth.loc[truth["key"].isin(keys), "source"])
    unseen = [p for p in photos if p.stem in names]
    return {"unseen (sources in the manifest)": evaluate_counts(cells, unseen, classes)}


def main() -> None:
    from leukocli.counting.count import count_photos, evaluate_counts
    from leukocli.counting.locate import LocatorParams, locate_cells
    from leukocli.modeling.bundle import load_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True, help="BCCD: JPEGImages/, Annotations/")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--unseen", type=Path, help="manifest of images the model did not train on")
    ap.add_argument("--sources", type=Path, help="blood-cells sources.csv: label,file,source")
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
           **_unseen(args.unseen, args.sources, cells, photos, classes),
           "locate_photos_per_s": round(locate_rate, 1),
           "count_photos_per_s": round(count_rate, 1),
           "count_vs_locate_ratio": round(count_rate / locate_rate, 2),
           "model": str(args.model) if args.model else None, "machine": machine()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
