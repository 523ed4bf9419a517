"""Which part of the `domain` recipe costs blood-cells' unseen photos?

The shipped `wbc` (the `domain` recipe) scores about 60% per image on blood-cells photos
it never saw, where a blood-cells model of the `cpu` recipe cross-validates at 85%. This
screen trains variants of the recipe on blood-cells alone and scores each on the held
fifth of the photos (grouped by the recovered source photo, so no sibling of a scored
photo trained it) and, zero-shot, on 2,000 PBC cells of the 4 shared classes (500 a
class), the robustness the recipe exists for. Variants, each one change from `domain`
or from `cpu`:

- `cpu`: leuko's default recipe, the in-domain baseline (crop 128, the `strong`
  augmentation, no normalisation layers);
- `domain`: the recipe as shipped (crop 96, the `domain` augmentation, background and
  stain normalised inside the model);
- `domain-c128`: the same with a 128-pixel cell crop, the `cpu` recipe's;
- `domain-mild`: the `domain` augmentation with less blur and re-framing (a third as
  many images at a lower resolution, no lower than 0.4 of it; half the magnification
  range; a tenth re-framed as tight crops, not a quarter);
- `cpu-norm`: the `cpu` recipe (crop 128, the `strong` augmentation) with the two
  normalisation layers of `domain`;
- `cpu-balance` and `cpu-stain`: the `cpu` recipe with one of the two, the background
  balance (`ColorBalance`) or the stain normalisation (`StainNorm`), to tell which of
  them costs the other lab and which holds a shifted background (`cpu-balance` is now
  one of leuko's recipes);
- `cpu-balance-od`: `cpu-balance` with the `domain` augmentation's stain amount, hue
  and tone curve (in optical density) added to `strong`, and nothing else of it: PBC's
  nuclei are twice as dark as blood-cells' (README), which this spans;
- `cpu-balance-frame`: `cpu-balance` with the `domain` augmentation's magnification,
  framing and resolution ranges added to `strong` (nothing of its colour): the shipped
  `wbc` loses 4-9 points on blood-cells' cells set in a whole 640x480 field, where the
  one before it, trained with those ranges, lost none (README, simulated microscopes);
- `cpu-balance-frame-mild`: the same with `domain-mild`'s narrower ranges. Neither was
  kept: both cost PBC's zero-shot score and neither held a whole field better (README).

Variants are defined here, not in leuko: a variant becomes a recipe only once measured.
Steps already done are reused, so an interrupted run continues. One training at a time.

    python benchmarks/recipe_screen.py --data ../shared/data --out recipe-screen \
        --variants domain domain-mild --folds 0 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

SHARED = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
VARIANTS = ("cpu", "domain", "domain-c128", "domain-mild", "cpu-norm", "cpu-balance",
            "cpu-stain", "cpu-balance-od", "cpu-balance-frame", "cpu-balance-frame-mild")


def register_variants() -> None:
    """Add the screened variants to leuko's recipe tables, in this process only."""
    from leukocli.modeling import augment
    from leukocli.training import options

    augment.AUGMENT_POLICIES["domain-mild"] = replace(
        augment.AUGMENT_POLICIES["domain"], name="domain-mild", resolution=0.3, lowest=0.4,
        magnify=0.25, tight=0.1)
    options.RECIPES["domain-mild"] = replace(options.RECIPES["domain"], name="domain-mild",
                                             augment="domain-mild")
    options.RECIPES["cpu-norm"] = replace(options.RECIPES["cpu"], name="cpu-norm",
                                          balance=True, stain_norm=True)
    options.RECIPES["cpu-stain"] = replace(options.RECIPES["cpu"], name="cpu-stain",
                                           stain_norm=True)
    domain = augment.AUGMENT_POLICIES["domain"]
    augment.AUGMENT_POLICIES["strong-od"] = replace(
        augment.AUGMENT_POLICIES["strong"], name="strong-od", stain=domain.stain,
        gamma=domain.gamma)
    options.RECIPES["cpu-balance-od"] = replace(options.RECIPES["cpu-balance"],
                                                name="cpu-balance-od", augment="strong-od")
    mild = augment.AUGMENT_POLICIES["domain-mild"]
    for name, ranges in (("frame", domain), ("frame-mild", mild)):
        augment.AUGMENT_POLICIES[f"strong-{name}"] = replace(
            augment.AUGMENT_POLICIES["strong"], name=f"strong-{name}", magnify=ranges.magnify,
            resolution=ranges.resolution, lowest=ranges.lowest, tight=ranges.tight)
        options.RECIPES[f"cpu-balance-{name}"] = replace(
            options.RECIPES["cpu-balance"], name=f"cpu-balance-{name}", augment=f"strong-{name}")


def manifests(data: Path, out: Path, folds: int = 5) -> Any:
    """Blood-cells rows with their fold (source photos shuffled with seed 0, dealt round
    robin into `folds`), and the PBC sample (seed 1) written to out/pbc4.csv."""
    import pandas as pd

    truth = pd.read_csv(data / "blood-cells" / "sources.csv")
    bc = pd.DataFrame({
        "path": [str(data / "blood-cells/images/TRAIN" / lab / f)
                 for lab, f in zip(truth["label"], truth["file"], strict=True)],
        "label": truth["label"], "group": truth["source"]})
    sources = sorted(set(bc["group"]))
    random.Random(0).shuffle(sources)
    fold_of = {s: i % folds for i, s in enumerate(sources)}
    bc["fold"] = bc["group"].map(fold_of)
    rows = []
    for cls in SHARED:
        files = sorted((data / "pbc" / cls.lower()).glob("*.jpg"))
        random.Random(1).shuffle(files)
        rows += [{"path": str(f), "label": cls} for f in files[:500]]
    pd.DataFrame(rows).to_csv(out / "pbc4.csv", index=False)
    return bc


def _finished(run: Path) -> bool:
    meta = run / "leuko.json"
    return meta.exists() and json.loads(meta.read_text()).get("status") == "finished"


def screen_one(variant: str, fold: int, bc: Any, out: Path) -> dict[str, Any]:
    """Train `variant` on the other folds (unless done) and score it both ways."""
    import leukocli as lk

    run, train_csv = out / f"{variant}-f{fold}", out / f"train-f{fold}.csv"
    held_csv = out / f"held-f{fold}.csv"
    held_rows = bc[bc["fold"] == fold].drop(columns="fold")
    bc[bc["fold"] != fold].drop(columns="fold").to_csv(train_csv, index=False)
    held_rows.to_csv(held_csv, index=False)
    recipe, extra = (variant[:-5], {"crop_cell": 128}) if variant.endswith("-c128") \
        else (variant, {})
    start = time.perf_counter()
    if not _finished(run):
        shutil.rmtree(run, ignore_errors=True)
        lk.train(train_csv, "none", out=run, backbone="compact", recipe=recipe,
                 img_size=(240, 320), batch=20, weights="none", seed=0, **extra)
    held = lk.evaluate(held_csv, model=run, out=out / f"{variant}-f{fold}-held")
    zero = lk.evaluate(out / "pbc4.csv", model=run, out=out / f"{variant}-f{fold}-pbc4")
    per_photo = held.metrics.get("group_accuracy")
    return {"variant": variant, "fold": fold, "held_photos": int(held_rows["group"].nunique()),
            "held_images": len(held_rows), "held": held.metrics["accuracy"],
            "held_per_photo": per_photo, "pbc4_zero_shot": zero.metrics["accuracy"],
            "train_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("recipe-screen"))
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    a = ap.parse_args()
    register_variants()
    a.out.mkdir(parents=True, exist_ok=True)
    bc = manifests(a.data.resolve(), a.out)
    results = []
    for fold in a.folds:
        for variant in a.variants:
            done = a.out / f"{variant}-f{fold}.json"
            if not done.exists():
                done.write_text(json.dumps(screen_one(variant, fold, bc, a.out), indent=1))
            results.append(json.loads(done.read_text()))
            print(json.dumps(results[-1]), flush=True)
    print(f"{'variant':<12} " + " ".join(f"fold {f}: held / PBC zero-shot" for f in a.folds))
    for v in a.variants:
        cells = [r for r in results if r["variant"] == v]
        print(f"{v:<12} " + "   ".join(f"{r['held']:.1%} / {r['pbc4_zero_shot']:.1%}"
                                         for r in cells))
    report = {"benchmark": "recipe_screen", "machine": machine(), "results": results}
    (a.out / "recipe_screen.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
