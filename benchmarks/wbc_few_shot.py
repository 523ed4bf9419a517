"""The shipped classifier adapted to a microscope from a few labelled cells, as a lab
would: `leuko train --weights wbc --val none` on K cells per class, scored on cells of
photos none of the K came from, against the shipped classifier as it is, on the same
cells (the baseline, in the same run).

The cells are blood-cells TRAIN's 28 source photos that the shipped `wbc` never trained
on (benchmarks/wbc_model.py holds them out: seed 0, a tenth of the photos). Each draw
takes K cells per class from part of those photos and scores every image of the others,
so no scored photo, nor any augmented sibling of one, was seen. Few photos are held out
(2 lymphocyte, 3 monocyte), so each draw scores a few hundred images of a handful of
photos: read the figures with their counts. `sources.csv` only keeps photos apart.

    python benchmarks/wbc_few_shot.py --data ../shared/data --out wbc-few-shot
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402
from cross_domain import _evaluate, _train, draw_few, score_set  # noqa: E402
from wbc_model import manifests  # noqa: E402


def photos_right(eval_dir: Path) -> str:
    """"n of m" source photos called right by majority (leuko evaluate's group figure)."""
    m = json.loads((eval_dir / "metrics.json").read_text())
    return f"{m['n_groups_correct']} of {m['n_groups']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("wbc-few-shot"))
    ap.add_argument("--shots", type=int, default=25)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--few-epochs", type=int, default=30)
    ap.add_argument("--model", default="wbc",
                    help="the classifier to adapt: wbc (shipped) or a candidate's run folder")
    ap.add_argument("--unfreeze", type=int, default=0,
                    help="leuko train --unfreeze: fine-tune only the top N backbone layers, "
                         "BatchNorm kept frozen (0: all, BatchNorm too)")
    a = ap.parse_args()
    import pandas as pd

    start = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    manifests(a.data, a.out / "manifests", 0.1, 0)  # the photos wbc was not trained on
    held = pd.read_csv(a.out / "manifests" / "val-bc.csv")
    log = a.out / "log.txt"
    draws = []
    for d in range(a.draws):
        tag = f"k{a.shots}-d{d}"
        few = draw_few(held, a.shots, seed=1000 * a.shots + d)
        few.to_csv(a.out / f"{tag}-train.csv", index=False)
        scored = score_set(held, few, 0, d)
        scored.to_csv(a.out / f"{tag}-score.csv", index=False)
        seconds = _train(["train", "--train", str(a.out / f"{tag}-train.csv"), "--val", "none",
                          "--weights", a.model, "--epochs", str(a.few_epochs), "--batch", "20",
                          "--unfreeze", str(a.unfreeze), "--seed", str(d)],
                         a.out / f"{tag}-run", log)
        shipped = _evaluate(a.out / f"{tag}-score.csv", Path(a.model), a.out / f"{tag}-wbc",
                            log)
        adapted = _evaluate(a.out / f"{tag}-score.csv", a.out / f"{tag}-run",
                            a.out / f"{tag}-eval", log)
        draws.append({"draw": d, "train_cells": len(few), "train_photos": few["group"].nunique(),
                      "scored_images": len(scored), "scored_photos": scored["group"].nunique(),
                      "shipped": shipped, "adapted": adapted,
                      "shipped_photos": photos_right(a.out / f"{tag}-wbc"),
                      "adapted_photos": photos_right(a.out / f"{tag}-eval"),
                      "train_s": round(seconds, 1)})
        print(f"draw {d}: shipped {100 * shipped:.1f}% -> adapted {100 * adapted:.1f}% on "
              f"{len(scored)} images of {scored['group'].nunique()} photos (photos right: "
              f"{draws[-1]['shipped_photos']} -> {draws[-1]['adapted_photos']})",
              file=sys.stderr)
    report = {"benchmark": "wbc_few_shot", "machine": machine(), "shots": a.shots,
              "model": a.model, "unfreeze": a.unfreeze,
              "draws": draws,
              "median_shipped": statistics.median(x["shipped"] for x in draws),
              "median_adapted": statistics.median(x["adapted"] for x in draws),
              "wall_s": round(time.perf_counter() - start, 1)}
    (a.out / "wbc_few_shot.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
