"""Cross-domain: train on one lab's cells, score another's zero-shot, then few-shot.

Both directions between PBC (CellaVision crops, 8 classes) and blood-cells (microscope
fields, 4 classes), with the shipped classifier's recipe (`--recipe cpu-balance`; another
with `--recipe`, e.g. `domain`, the recipe of the `wbc` shipped before):

1. a source model per domain, trained on all of it (`--val none`, a fixed schedule);
2. zero-shot: `leuko evaluate` of each on the other domain, every image (PBC: its 4
   classes that blood-cells has; an 8-class model chooses among the data's classes);
3. few-shot: K labelled cells per class of the target (K = 10, 25, 50; `--draws` draws
   each) fine-tune the source model (`leuko train --weights SOURCE --val none`), scored
   on the target's other cells. For blood-cells the cells drawn are different source
   photos where the class has enough of them, and every image of a drawn photo (its
   augmented siblings) is left out of the score, so no scored photo was seen.

Prints one table (accuracy per image, median and range of the draws) and writes JSON.
`sources.csv` is read here only to keep the scored photos apart; leuko never reads it.
Steps already done are reused, so an interrupted run continues.

    python benchmarks/cross_domain.py --data ../shared/data --out xdomain
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_leuko  # noqa: E402

SHARED = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def tables(data: Path) -> dict[str, Any]:
    """Each domain as a DataFrame (path, label, group): pbc (8 classes), bc (4)."""
    import pandas as pd

    rows = [{"path": str(f.resolve()), "label": d.name.upper(), "group": f"pbc/{f.name}"}
            for d in sorted((data / "pbc").iterdir()) if d.is_dir()
            for f in sorted(d.glob("*.jpg"))]
    pbc = pd.DataFrame(rows)
    truth = pd.read_csv(data / "blood-cells" / "sources.csv")
    bc = pd.DataFrame({
        "path": [str((data / "blood-cells/images/TRAIN" / lab / f).resolve())
                 for lab, f in zip(truth["label"], truth["file"], strict=True)],
        "label": truth["label"], "group": "bc/" + truth["source"]})
    return {"pbc": pbc, "bc": bc}


def draw_few(target: Any, k: int, seed: int, keep_share: float = 0.4) -> Any:
    """K rows per class, from different groups (photos) where the class has enough
    groups left after keeping `keep_share` of them for scoring; else siblings fill up."""
    rng = random.Random(seed)
    picked = []
    for _, rows in target.groupby("label"):
        groups = sorted(set(rows["group"]))
        rng.shuffle(groups)
        usable = groups[: max(1, min(k, int(len(groups) * (1 - keep_share))))]
        chosen: list[int] = []
        pools = {g: list(rows.index[rows["group"] == g]) for g in usable}
        for pool in pools.values():
            rng.shuffle(pool)
        while len(chosen) < k and any(pools.values()):
            for g in usable:  # one image of each photo, then a second, ...
                if pools[g] and len(chosen) < k:
                    chosen.append(pools[g].pop())
        picked += chosen
    return target.loc[picked]


def score_set(target: Any, few: Any, limit: int, seed: int) -> Any:
    """The target's rows sharing no group with the few, at most `limit` (stratified)."""
    rest = target[~target["group"].isin(set(few["group"]))]
    if limit and len(rest) > limit:
        share = limit / len(rest)
        rest = rest.groupby("label").sample(frac=share, random_state=seed)
    return rest


def accuracy(eval_dir: Path) -> float:
    return float(json.loads((eval_dir / "metrics.json").read_text())["accuracy"])


def _evaluate(csv: Path, model: Path, out: Path, log: Path) -> float:
    if not (out / "metrics.json").is_file():
        run_leuko(["evaluate", str(csv), "--model", str(model), "--out", str(out)], log,
                  ok=(0, 1))
    return accuracy(out)


def _train(args: list[str], out: Path, log: Path) -> float:
    if (out / "model.keras").is_file() and '"finished"' in (out / "leuko.json").read_text():
        return 0.0
    if out.exists():  # an interrupted step: start it again
        import shutil

        shutil.rmtree(out)
    return run_leuko([*args, "--out", str(out)], log)


def direction(name: str, source: Any, target: Any, a: argparse.Namespace) -> dict[str, Any]:
    out = a.out / name
    out.mkdir(parents=True, exist_ok=True)
    log = a.out / "log.txt"
    source.to_csv(out / "source.csv", index=False)
    target.to_csv(out / "target.csv", index=False)
    common = ["--backbone", "compact", "--img", "240x320", "--batch", "20", "--seed", "0"]
    seconds = _train(["train", "--train", str(out / "source.csv"), "--val", "none",
                      "--recipe", a.recipe, "--epochs", str(a.epochs), *common],
                     out / "source-run", log)
    result: dict[str, Any] = {"source_images": len(source), "target_images": len(target),
                              "source_train_s": round(seconds, 1) or None,
                              "zero_shot": _evaluate(out / "target.csv", out / "source-run",
                                                     out / "zero-shot", log), "few_shot": {}}
    for k in a.shots:
        scores = []
        for d in range(a.draws):
            tag = f"k{k}-d{d}"
            few = draw_few(target, k, seed=1000 * k + d)
            few.to_csv(out / f"{tag}-train.csv", index=False)
            score_set(target, few, a.score_max, d).to_csv(out / f"{tag}-score.csv", index=False)
            _train(["train", "--train", str(out / f"{tag}-train.csv"), "--val", "none",
                    "--weights", str(out / "source-run"), "--epochs", str(a.few_epochs),
                    "--batch", "20", "--seed", str(d)], out / f"{tag}-run", log)
            scores.append(_evaluate(out / f"{tag}-score.csv", out / f"{tag}-run",
                                    out / f"{tag}-eval", log))
        result["few_shot"][str(k)] = {"median": statistics.median(scores),
                                      "min": min(scores), "max": max(scores), "draws": scores}
        print(f"{name} k={k}: {[round(100 * s, 1) for s in scores]}", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("xdomain"))
    ap.add_argument("--epochs", type=int, default=8, help="source training epochs")
    ap.add_argument("--recipe", default="cpu-balance", help="the source models' leuko recipe")
    ap.add_argument("--few-epochs", type=int, default=30, help="few-shot epochs")
    ap.add_argument("--shots", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--score-max", type=int, default=2000,
                    help="few-shot scores on at most this many target images (0: all)")
    ap.add_argument("--only", choices=("pbc-to-bc", "bc-to-pbc"), default=None)
    a = ap.parse_args()
    start = time.perf_counter()
    t = tables(a.data)
    pbc4 = t["pbc"][t["pbc"]["label"].isin(SHARED)]
    plan = {"bc-to-pbc": (t["bc"], pbc4), "pbc-to-bc": (t["pbc"], t["bc"])}
    results = {name: direction(name, src, tgt, a) for name, (src, tgt) in plan.items()
               if a.only in (None, name)}
    header = f"{'direction':<11} {'zero-shot':>9} " + " ".join(f"{f'k={k}':>17}" for k in a.shots)
    lines = [header]
    for name, r in results.items():
        cells = [f"{100 * r['zero_shot']:9.1f}"]
        for k in a.shots:
            f = r["few_shot"][str(k)]
            cells.append(f"{100 * f['median']:5.1f} ({100 * f['min']:.1f}-{100 * f['max']:.1f})")
        lines.append(f"{name:<11} " + " ".join(f"{c:>17}" if i else c
                                                for i, c in enumerate(cells)))
    print("\n".join(lines), file=sys.stderr)
    report = {"benchmark": "cross_domain", "machine": machine(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "results": results, "wall_s": round(time.perf_counter() - start, 1),
        "table": lines}
    (a.out / "cross_domain.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
