"""Accuracy on unseen cells: split, train, evaluate (plain and with TTA), score per source.

Runs the shipped commands end to end for each split seed, so the figures are what a user
gets:

    leuko split DATA --val 0.2 --seed S --out OUT/split-S
    leuko train --train OUT/split-S/train.csv --val OUT/split-S/val.csv --out OUT/run-S ...
    leuko evaluate OUT/split-S/val.csv --model OUT/run-S [--tta N]

Per image is the plain accuracy. Per source photo averages the softmax over all of a
source's augmented siblings, using the ground truth in `--sources` (the dataset's
recovered `sources.csv`, matched on class/file) when given, else leuko's own sibling
groups. Also checks that no validation image's source photo is in train. Steps already
done (a run's model, an evaluation's metrics.json) are reused, so an interrupted run can
be restarted. Prints one JSON object; the baseline for each seed is its own plain
evaluation (the TTA ratio).

    python benchmarks/accuracy.py --data ../shared/data/blood-cells/images/TRAIN \
        --sources ../shared/data/blood-cells/sources.csv --seeds 0 1 2
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
from _common import class_file_key, machine, read_sources, run_leuko  # noqa: E402


def _score(eval_dir: Path, split_dir: Path, truth: pd.DataFrame | None) -> dict[str, Any]:
    pred = pd.read_csv(eval_dir / "predictions.csv")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    probs = [c for c in pred.columns if c.startswith("prob_")]
    classes = np.array([c[len("prob_"):] for c in probs])
    pred["key"] = class_file_key(pred["path"])
    if truth is not None:
        pred = pred.merge(truth, on="key", how="left")
    else:
        val = pd.read_csv(split_dir / "val.csv")
        val["key"] = class_file_key(val["path"])
        pred = pred.merge(val[["key", "group"]].rename(columns={"group": "source"}),
                          on="key", how="left")
    missing = int(pred["source"].isna().sum())
    per_source = pred.dropna(subset=["source"]).groupby("source")
    mean_probs = per_source[probs].mean()
    true = per_source["label"].first()
    src_ok = classes[mean_probs.to_numpy().argmax(1)] == true.to_numpy()
    wrong = pred[pred["predicted"] != pred["label"]]
    worst = (wrong.groupby(["source", "label", "predicted"]).size()
             .sort_values(ascending=False).head(6))
    return {
        "per_image": round(float((pred["predicted"] == pred["label"]).mean()), 4),
        "per_source": round(float(src_ok.mean()), 4),
        "n_images": int(len(pred)),
        "n_sources": int(len(mean_probs)),
        "unmatched_images": missing,
        "tta_views": metrics.get("tta_views"),
        "most_errors": [f"{s} {t}->{p}: {n}" for (s, t, p), n in worst.items()],
    }


def _leak(split_dir: Path, truth: pd.DataFrame | None) -> float | None:
    if truth is None:
        return None
    parts = {}
    for name in ("train", "val"):
        df = pd.read_csv(split_dir / f"{name}.csv")
        df["key"] = class_file_key(df["path"])
        parts[name] = df.merge(truth, on="key", how="left")
    seen = set(parts["train"]["source"].dropna())
    return round(float(parts["val"]["source"].isin(seen).mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="class-folder dataset to split")
    ap.add_argument("--sources", help="ground truth: label,file,source or CLASS/file,source")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="accuracy-runs")
    ap.add_argument("--backbone", default="compact")
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: the recipe's length (leuko train's own default)")
    ap.add_argument("--tta", type=int, default=8)
    ap.add_argument("--train-args", default="", help="extra arguments for leuko train")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    truth = read_sources(args.sources) if args.sources else None

    result: dict[str, Any] = {"machine": machine(), "backbone": args.backbone,
                              "epochs": args.epochs, "tta": args.tta, "seeds": {}}
    for seed in args.seeds:
        split_dir, run_dir = out / f"split-{seed}", out / f"run-{seed}"
        if not (split_dir / "val.csv").exists():
            run_leuko(["split", args.data, "--val", "0.2", "--seed", str(seed),
                       "--out", str(split_dir)], log, ok=(0, 1))
        train_s = None
        if not (run_dir / "model.keras").exists():
            train_s = run_leuko(["train", "--train", str(split_dir / "train.csv"),
                                 "--val", str(split_dir / "val.csv"), "--backbone", args.backbone,
                                 *([] if args.epochs is None else ["--epochs", str(args.epochs)]),
                                 "--out", str(run_dir), *args.train_args.split()],
                                log, ok=(0, 1))
        row: dict[str, Any] = {"leak_rate": _leak(split_dir, truth),
                               "train_minutes": None if train_s is None else round(train_s / 60, 1)}
        for name, extra in (("plain", []), ("tta", ["--tta", str(args.tta)])):
            ev = out / f"eval-{seed}-{name}{args.tta if name == 'tta' else ''}"
            if not (ev / "metrics.json").exists():
                run_leuko(["evaluate", str(split_dir / "val.csv"), "--model", str(run_dir),
                           "--out", str(ev), *extra], log, ok=(0, 1))
            row[name] = _score(ev, split_dir, truth)
        row["tta_vs_plain"] = round(row["tta"]["per_image"] / row["plain"]["per_image"], 4)
        result["seeds"][str(seed)] = row
        print(json.dumps({"seed": seed, **row}), file=sys.stderr, flush=True)
    for name in ("plain", "tta"):
        imgs = [r[name]["per_image"] for r in result["seeds"].values()]
        srcs = [r[name]["per_source"] for r in result["seeds"].values()]
        result[f"mean_{name}"] = {"per_image": round(float(np.mean(imgs)), 4),
                                  "per_source": round(float(np.mean(srcs)), 4)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
