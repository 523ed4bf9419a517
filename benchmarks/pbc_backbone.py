"""leuko's own pretrained backbone: train on PBC, measure it on a held-out 20%, ship it.

Reproduces `leukocli/weights/pbc.weights.h5` and its card `pbc.json` with the shipped
commands, so the figures in the card are what a user gets:

    leuko split PBC --group-by none --val 0.2 --seed 0 --out OUT/split
    leuko train --train OUT/split/train.csv --val OUT/split/val.csv --backbone compact \
        --img 180x180 --epochs 16 --out OUT/run
    leuko evaluate OUT/split/val.csv --model OUT/run --out OUT/eval

then saves the trained backbone (the convolutional part; the 8-class head is dropped)
with `backbone.save_weights` and writes the card `--weights pbc` reads: backbone, cell
crop settings, classes, the commands above, held-out accuracy, wall time, the data's
licence and credit. Steps already done are reused, so an interrupted run can restart.
The baseline in the printed JSON is the published 96.2% (fine-tuned ImageNet VGG-16).

    python benchmarks/pbc_backbone.py --data ../shared/data/pbc --out pbc-backbone \
        --ship leukocli/weights
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_leuko  # noqa: E402

PUBLISHED = 0.962  # Acevedo et al. 2019, fine-tuned ImageNet VGG-16, 8 classes
CREDIT = ("Acevedo A, Merino A, Alferez S, Molina A, Boldu L, Rodellar J. A dataset of "
          "microscopic peripheral blood cell images for development of automatic recognition "
          "systems. Data in Brief 30 (2020) 105474. Licence CC BY 4.0.")


def _ship(run: Path, metrics: dict[str, Any], tta: dict[str, Any], commands: list[str],
          dest: Path, name: str) -> dict[str, Any]:
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.model import get_backbone

    meta = json.loads((run / "leuko.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / f"{name}.weights.h5"
    get_backbone(load_bundle(run).model).save_weights(str(weights))
    card = {
        "file": weights.name,
        "backbone": meta["backbone"],
        "crop_cell": meta.get("crop_cell"),
        "crop_scale": meta.get("crop_scale"),
        "trained_on": "PBC: 17,092 peripheral blood cells, CellaVision DM96, Hospital Clinic "
                      "of Barcelona, 8 classes, at half resolution (180x182)",
        "classes": meta["classes"],
        "img_size": meta["img_size"],
        "epochs": meta.get("epochs_done"),
        "precision": meta.get("precision"),
        "wall_time_s": meta.get("wall_time_s"),
        "held_out": {"images": metrics["n"], "accuracy": metrics["accuracy"],
                     "accuracy_ci95": metrics.get("accuracy_ci"),
                     "accuracy_tta8": tta["accuracy"],
                     "accuracy_tta8_ci95": tta.get("accuracy_ci"),
                     "split": "stratified random 80/20, leuko split --group-by none --seed 0"},
        "reproduce": commands,
        "size_bytes": weights.stat().st_size,
        "licence": "CC BY 4.0 (the training data's); credit required",
        "credit": CREDIT,
        "leuko_version": meta.get("leuko_version"),
    }
    (dest / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the pbc folder (8 lower-case class folders)")
    ap.add_argument("--out", default="pbc-backbone")
    ap.add_argument("--img", default="180x180")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="the split's seed")
    ap.add_argument("--ship", type=Path, help="write NAME.weights.h5 and NAME.json here")
    ap.add_argument("--name", default="pbc")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    split, run, ev, ev_tta = out / "split", out / "run", out / "eval", out / "eval-tta8"
    commands = [
        f"leuko split {args.data} --group-by none --val 0.2 --seed {args.seed} --out {split}",
        f"leuko train --train {split}/train.csv --val {split}/val.csv --backbone compact "
        f"--img {args.img} --epochs {args.epochs} --out {run}",
        f"leuko evaluate {split}/val.csv --model {run} --out {ev}",
        f"leuko evaluate {split}/val.csv --model {run} --tta 8 --out {ev_tta}",
    ]
    seconds: dict[str, float | None] = {}
    for step, command, done in zip(("split", "train", "evaluate", "evaluate-tta8"), commands,
                                   (split / "val.csv", run / "leuko.json",
                                    ev / "metrics.json", ev_tta / "metrics.json"), strict=True):
        started = done.exists()  # a run's leuko.json exists from its first epoch on
        finished = started and (step != "train"
                                or json.loads(done.read_text()).get("status") == "finished")
        if finished:
            seconds[step] = None
            continue
        if started:
            command = f"leuko train --resume --out {run}"  # an interrupted run continues
        seconds[step] = round(run_leuko(command.split()[1:], log), 1)
    metrics = json.loads((ev / "metrics.json").read_text())
    tta = json.loads((ev_tta / "metrics.json").read_text())
    acc = metrics["accuracy"]
    result: dict[str, Any] = {
        "machine": machine(),
        "held_out_accuracy": acc,
        "held_out_accuracy_tta8": tta["accuracy"],
        "held_out_images": metrics["n"],
        "published_vgg16": PUBLISHED,
        "vs_published_points": round(100 * (acc - PUBLISHED), 2),
        "step_seconds": seconds,
        "run_wall_time_s": json.loads((run / "leuko.json").read_text()).get("wall_time_s"),
    }
    if args.ship:
        result["card"] = _ship(run, metrics, tta, commands, args.ship, args.name)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
