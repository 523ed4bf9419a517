"""Score `leuko cv` runs against a dataset's recovered source photos: leak, per image, per source.

`leuko cv` groups images by the siblings it rediscovers from pixels; this checks those
folds against independent ground truth (the blood-cells `sources.csv`): the leak is the
share of images whose source photo also has images in another fold (0.0 means no photo
was ever on both sides). Per source photo averages the out-of-fold softmax over a
photo's augmented siblings. Several runs side by side compare recipes on the same data;
the baseline for each is the first run given. `--folds 0 1` compares runs on the same
folds (a run trained with `leuko cv --fold K` need not be collected).

    python benchmarks/cv_sources.py runs/cv-scratch runs/cv-pbc \
        --sources ../shared/data/blood-cells/sources.csv \
        --exclude-sources BloodImage_00278 BloodImage_00283 BloodImage_00089
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import class_file_key, machine, read_sources  # noqa: E402


def _acc(frame: pd.DataFrame, probs: list[str], classes: np.ndarray) -> dict[str, Any]:
    by_source = frame.groupby("source")
    mean = by_source[probs].mean()
    src_ok = classes[mean.to_numpy().argmax(1)] == by_source["label"].first().to_numpy()
    return {"per_image": round(float((frame["predicted"] == frame["label"]).mean()), 4),
            "per_source": round(float(src_ok.mean()), 4),
            "images": int(len(frame)), "sources": int(len(mean))}


def _oof(run: Path, only: list[int] | None) -> pd.DataFrame:
    """The run's out-of-fold predictions; of its finished folds when not yet collected."""
    if (run / "oof.csv").exists():
        oof = pd.read_csv(run / "oof.csv", dtype={"group": str})
    else:
        parts = sorted(run.glob("fold-*/oof.csv"))
        if not parts:
            sys.exit(f"{run}: no oof.csv and no finished fold")
        oof = pd.concat([pd.read_csv(f, dtype={"group": str}) for f in parts], ignore_index=True)
    return oof if only is None else oof[oof["fold"].isin(only)].reset_index(drop=True)


def score(run: Path, truth: pd.DataFrame, exclude: list[str], only: list[int] | None = None
          ) -> dict[str, Any]:
    oof = _oof(run, only)
    oof["key"] = class_file_key(oof["path"])
    oof = oof.merge(truth, on="key", how="left")
    probs = [c for c in oof.columns if c.startswith("prob_")]
    classes = np.array([c[len("prob_"):] for c in probs])
    folds_per_source = oof.dropna(subset=["source"]).groupby("source")["fold"].nunique()
    split_sources = set(folds_per_source[folds_per_source > 1].index)
    known = oof.dropna(subset=["source"])
    meta = json.loads((run / "cv.json").read_text())
    folds = meta.get("metrics", {}).get("folds", {})
    seconds = [json.loads((run / f"fold-{k}" / "leuko.json").read_text()).get("wall_time_s", 0)
               for k in sorted(oof["fold"].unique())]
    return {
        "run": str(run),
        "options": {k: meta.get("options", {}).get(k)
                    for k in ("backbone", "weights", "img_size", "batch", "epochs", "seed")},
        "unmatched_images": int(oof["source"].isna().sum()),
        "leak": round(float(known["source"].isin(split_sources).mean()), 4),
        "all": _acc(known, probs, classes),
        "without": {"excluded": exclude,
                    **_acc(known[~known["source"].isin(exclude)], probs, classes)},
        "per_fold": {str(k): _acc(part, probs, classes)
                     for k, part in known.groupby("fold", sort=True)},
        "fold_spread_per_image": {k: round(float(folds[k]), 4)
                                  for k in ("mean", "std", "min", "max") if k in folds},
        "folds_scored": sorted(int(k) for k in oof["fold"].unique()),
        "train_minutes_per_fold": [round(float(s) / 60, 1) for s in seconds],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="collected leuko cv run folders")
    ap.add_argument("--sources", required=True, type=Path,
                    help="ground truth: label,file,source or CLASS/file,source")
    ap.add_argument("--exclude-sources", nargs="*", default=[],
                    help="also score without these source photos (e.g. contradicted labels)")
    ap.add_argument("--folds", type=int, nargs="*", help="score only these folds (all: default)")
    args = ap.parse_args()
    truth = read_sources(args.sources)
    rows = [score(run, truth, args.exclude_sources, args.folds) for run in args.runs]
    base = rows[0]["all"]["per_image"]
    for row in rows:
        row["per_image_vs_first"] = round(row["all"]["per_image"] / base, 4)
    print(json.dumps({"machine": machine(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
