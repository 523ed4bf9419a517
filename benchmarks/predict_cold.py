"""A fresh `leuko predict cell.jpg`: through the run's TensorFlow-free twin (the default)
against `--runtime keras`, whole processes, in turn, each figure the median of N.

Each model is timed in pairs (twin, then Keras), and the ratio is taken pair by pair, so
a neighbour slowing the machine for a while moves both sides of a pair alike. Without
--model it times the shipped classifier (`wbc`, chosen as a fresh folder's default) and,
with --make-run, a one-epoch run of the default compact recipe (240x320, cpu recipe)
trained here on synthetic smears (its weights do not matter to the time).

    python benchmarks/predict_cold.py [--image cell.jpg] [--model RUN ...] [--make-run]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine


def _once(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def paired(leuko: str, image: Path, model: str | None, runs: int, cwd: Path) -> dict[str, Any]:
    """Median wall seconds of twin and Keras runs, and the median of their pair ratios."""
    base = [leuko, "predict", str(image), *(["--model", model] if model else [])]
    _once(base, cwd)  # warm the page cache for both (same files)
    _once([*base, "--runtime", "keras"], cwd)
    twin, keras = [], []
    for _ in range(runs):
        twin.append(_once(base, cwd))
        keras.append(_once([*base, "--runtime", "keras"], cwd))
    return {"twin_s": round(statistics.median(twin), 3),
            "keras_s": round(statistics.median(keras), 3),
            "twin_over_keras": round(statistics.median(t / k for t, k in zip(twin, keras,
                                                                             strict=True)), 3),
            "twin_min_max_s": [round(min(twin), 3), round(max(twin), 3)]}


def make_compact_run(leuko: str, work: Path) -> Path:
    """A one-epoch run of `leuko train --backbone compact` (its default recipe and size)."""
    from leukocli.data.synth import make_dataset

    make_dataset(work / "data", per_class=2, size=(240, 320), seed=0, plant=False)
    run = work / "compact-run"
    subprocess.run([leuko, "train", "--train", str(work / "data"), "--val", str(work / "data"),
                    "--backbone", "compact", "--epochs", "1", "--out", str(run)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", type=Path, help="a cell photo (default: a synthetic smear)")
    ap.add_argument("--model", action="append", default=[],
                    help="a run to time (repeatable; default: the shipped wbc)")
    ap.add_argument("--make-run", action="store_true",
                    help="also train and time a one-epoch compact run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    # the console script beside this interpreter: a version manager's shim (pyenv's is
    # a bash script) would add its own start-up to every figure
    beside = Path(sys.executable).with_name("leuko")
    leuko = str(beside) if beside.is_file() else shutil.which("leuko") or "leuko"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)  # no runs/latest here: no --model means the shipped wbc
        image = args.image
        if image is None:
            from leukocli.data.synth import make_dataset

            make_dataset(work / "cell", per_class=1, size=(240, 320), seed=1, plant=False)
            image = sorted((work / "cell").glob("*/*.jpeg"))[0]
        models: list[str | None] = list(args.model) or [None]
        if args.make_run:
            models.append(str(make_compact_run(leuko, work)))
        results = {m or "wbc (shipped default)": paired(leuko, Path(image).resolve(), m,
                                                        args.runs, work) for m in models}
    print(json.dumps({"benchmark": "predict_cold", "runs": args.runs, "results": results,
                      "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
