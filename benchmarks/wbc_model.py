"""leuko's shipped classifier `wbc`: train on both labs' cells, measure it, ship it.

Writes one manifest of everything in `../shared/data/` (PBC's 8 classes and blood-cells'
4, named alike in upper case), holding out a validation part that shares no source
photo with training (blood-cells grouped by its original photo, PBC stratified at
random), then runs the shipped commands:

    leuko train --train OUT/train.csv --val OUT/val.csv --backbone compact \
        --recipe cpu-balance --img 240x320 --batch 20 --out OUT/run
    leuko train --train OUT/train.csv --val OUT/val.csv --weights OUT/run \
        --balance-by domain --epochs 5 --lr 2e-3 --seed 1 --out OUT/run2
    leuko evaluate OUT/val-pbc.csv --model OUT/run2 --out OUT/eval-pbc
    leuko evaluate OUT/val-bc.csv --model OUT/run2 --out OUT/eval-bc

The second training goes on from the first with the two labs weighing alike
(`--balance-by domain`: blood-cells' rows taken twice, about as many as PBC's); it
raised both held-out figures (README, Accuracy). `--stage2-epochs 0` ships the first.

and copies the run (model.keras and leuko.json, with a card: classes, data, licence and
credit, the commands, the held-out figures per domain) to `leukocli/weights/wbc/`, where
`--model wbc` and `--weights wbc` find it. `sources.csv` is read only here, to keep the
validation photos apart; leuko itself never reads it. Steps already done are reused.

    python benchmarks/wbc_model.py --data ../shared/data --out wbc-build --ship leukocli/weights
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_leuko  # noqa: E402

PBC_CREDIT = ("Acevedo A, Merino A, Alferez S, Molina A, Boldu L, Rodellar J. A dataset of "
              "microscopic peripheral blood cell images for development of automatic "
              "recognition systems. Data in Brief 30 (2020) 105474. Licence CC BY 4.0.")
BC_CREDIT = ("Blood Cell Images (Mooney), an augmentation of BCCD (Shenggan, MIT licence): "
             "the TRAIN part, 9,957 images of 277 original smear photos.")


def manifests(data: Path, out: Path, val_share: float, seed: int) -> dict[str, int]:
    """train.csv, val.csv, val-pbc.csv, val-bc.csv (path,label,group,domain)."""
    import pandas as pd

    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for folder in sorted((data / "pbc").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        rng.shuffle(files)
        n_val = round(val_share * len(files))
        for i, f in enumerate(files):
            rows.append({"path": str(f.resolve()), "label": folder.name.upper(),
                         "group": f"pbc/{f.name}", "domain": "pbc",
                         "part": "val" if i < n_val else "train"})
    bc = data / "blood-cells"
    truth = pd.read_csv(bc / "sources.csv")
    sources = sorted(set(truth["source"]))
    rng.shuffle(sources)
    held = set(sources[: round(val_share * len(sources))])
    for label, file, source in truth[["label", "file", "source"]].itertuples(index=False):
        path = bc / "images" / "TRAIN" / label / file
        rows.append({"path": str(path.resolve()), "label": label, "group": f"bc/{source}",
                     "domain": "blood-cells", "part": "val" if source in held else "train"})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["path", "label", "group", "domain"]
    train, val = table[table.part == "train"], table[table.part == "val"]
    train[cols].to_csv(out / "train.csv", index=False)
    val[cols].to_csv(out / "val.csv", index=False)
    val[val.domain == "pbc"][cols].to_csv(out / "val-pbc.csv", index=False)
    val[val.domain == "blood-cells"][cols].to_csv(out / "val-bc.csv", index=False)
    return {"train": len(train), "val": len(val), "val_sources_bc": len(held)}


def _figures(eval_dir: Path) -> dict[str, Any]:
    m = json.loads((eval_dir / "metrics.json").read_text())
    keep = ("n", "accuracy", "accuracy_ci", "group_accuracy", "group_accuracy_ci",
            "n_groups", "classes_scored")
    return {k: m[k] for k in keep if k in m}


def build_relative(meta: dict[str, Any], here: str) -> None:
    """The build machine's paths mean nothing elsewhere: name the manifests, and the first
    training a second one started from, as built (`wbc-build/train.csv`, `wbc-build/run`)."""
    for part in meta.get("manifests", {}).values():
        part["path"] = f"{here}/{Path(part['path']).name}"
    for key in ("train_csv", "val_csv"):
        meta["options"][key] = f"{here}/{Path(meta['options'][key]).name}"
    weights = str(meta["options"].get("weights") or "")
    if Path(weights).is_absolute():  # a run folder of this build, not a shipped name
        meta["options"]["weights"] = f"{here}/{Path(weights).name}"
        meta["weights"] = f"run:{meta['options']['weights']}"


def ship(run: Path, card: dict[str, Any], dest: Path) -> Path:
    """Copy the run's model and metadata into dest/wbc with the card inside leuko.json."""
    target = dest / "wbc"
    tmp = dest / ".wbc.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # the model alone, without the optimizer's state (a third of the file): smaller wheel
    import keras

    import leukocli.modeling.layers  # noqa: F401  (registers leuko's layers)
    from leukocli.modeling.export import float32_model

    # float32, as exports are: the same answers on every CPU (a bfloat16 model differs
    # by up to 0.09 in probability, and runs slowly where the CPU has no bfloat16)
    model = float32_model(keras.models.load_model(run / "model.keras", compile=False,
                                                  safe_mode=True))
    model.save(tmp / "model.keras")
    meta = json.loads((run / "leuko.json").read_text())
    meta["card"] = card
    build_relative(meta, run.parent.name)
    (tmp / "leuko.json").write_text(json.dumps(meta, indent=1) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    from leukocli.modeling.twin import add_twin

    add_twin(target)  # predict, evaluate and count answer through it without TensorFlow
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("wbc-build"))
    ap.add_argument("--ship", type=Path, default=None, help="leukocli/weights to ship into")
    ap.add_argument("--val", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--recipe", default="cpu-balance",
                    help="the first training's leuko recipe (the shipped wbc: cpu-balance; "
                         "before it, domain)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage2-epochs", type=int, default=5,
                    help="epochs of the balanced second training (0: none)")
    a = ap.parse_args()
    out = a.out
    log = out / "log.txt"
    counts = manifests(a.data, out, a.val, a.seed)
    train = ["train", "--train", str(out / "train.csv"), "--val", str(out / "val.csv"),
             "--backbone", "compact", "--recipe", a.recipe, "--img", "240x320", "--batch",
             "20", "--epochs", str(a.epochs), "--seed", str(a.seed), "--out", str(out / "run")]
    commands = [train]
    if a.stage2_epochs:
        commands.append(["train", "--train", str(out / "train.csv"), "--val",
                         str(out / "val.csv"), "--weights", str(out / "run"), "--balance-by",
                         "domain", "--epochs", str(a.stage2_epochs), "--lr", "2e-3", "--seed",
                         str(a.seed + 1), "--out", str(out / "run2")])
    final = Path(commands[-1][-1])
    for command in commands:
        if not (Path(command[-1]) / "model.keras").is_file():
            run_leuko(command, log)
    figures = {}
    for part in ("pbc", "bc"):
        ev = out / f"eval-{part}-{final.name}"
        if not (ev / "metrics.json").is_file():
            run_leuko(["evaluate", str(out / f"val-{part}.csv"), "--model", str(final),
                       "--out", str(ev)], log, ok=(0, 1))
        figures[part] = _figures(ev)
    card = {
        "name": "wbc",
        "trained_on": {"pbc": "PBC (CellaVision DM96, Hospital Clinic of Barcelona), 8 "
                       "classes, 17,092 cells at half resolution", "blood-cells": BC_CREDIT},
        "images": counts,
        "held_out": figures,
        "reproduce": ["python benchmarks/wbc_model.py --data ../shared/data --out wbc-build "
                      f"--val {a.val} --recipe {a.recipe} --epochs {a.epochs} --seed {a.seed} "
                      f"--stage2-epochs {a.stage2_epochs}",
                      *("leuko " + " ".join(c) for c in commands)],
        "licence": "CC BY 4.0 (PBC's, the training data); credit required",
        "credit": [PBC_CREDIT, BC_CREDIT],
        "machine": machine(),
        # every stage's own record, whichever of them ran in this call
        "train_wall_s": round(sum(json.loads((Path(c[-1]) / "leuko.json").read_text()).get(
            "wall_time_s", 0) for c in commands), 1),
    }
    shipped = str(ship(final, card, a.ship)) if a.ship else None
    if shipped:  # the figures of the file shipped (float32), not of the run it came from
        for part in ("pbc", "bc"):
            ev = out / f"eval-shipped-{part}"
            if not (ev / "metrics.json").is_file():
                run_leuko(["evaluate", str(out / f"val-{part}.csv"), "--model", shipped,
                           "--out", str(ev)], log, ok=(0, 1))
            card["held_out"][part] = _figures(ev)
        meta_path = Path(shipped) / "leuko.json"
        meta = json.loads(meta_path.read_text())
        meta["card"] = card
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({"card": card, "shipped": shipped}, indent=1))


if __name__ == "__main__":
    main()
