"""How fast the cell crop finds the cell: leuko's block and box means vs TensorFlow's pooling.

CellCrop.locate (inside every model with a cell crop, so in training, predict, count
and every export) averages a stain map in 4x4 blocks, then box-blurs the coarse map
9x9. Both were tf.nn.avg_pool2d, which on a CPU is far slower than the arithmetic
needs; leuko now uses reshapes and two small matrix products that give the same numbers
(tests/test_model.py checks they match to 1e-5). This times both ways in one process on
one batch, then the whole CellCrop forward pass, and prints one JSON object.

    python benchmarks/locate_speed.py --img 240x320 --batch 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import machine  # noqa: E402

from leukocli.modeling import layers  # noqa: E402


def _pooling_block_mean(x: Any, k: int) -> Any:
    return tf.nn.avg_pool2d(x, k, k, "VALID")


def _pooling_box_mean(x: Any, radius: int) -> Any:
    return tf.nn.avg_pool2d(x[..., None], 2 * radius + 1, 1, "SAME")[..., 0]


def _ms(fn: Any, x: Any, repeat: int) -> float:
    f = tf.function(fn)
    f(x)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img", default="240x320")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    h, w = (int(v) for v in args.img.split("x"))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch, h, w, 3)).astype(np.float32))
    crop = layers.CellCrop(128, 0.6, 1.9)
    leuko = {"locate_ms": _ms(lambda t: crop.locate(t), x, args.repeat),
             "cell_crop_ms": _ms(lambda t: crop(t), x, args.repeat)}
    ours = layers.block_mean, layers.box_mean
    layers.block_mean, layers.box_mean = _pooling_block_mean, _pooling_box_mean
    try:
        pooled = {"locate_ms": _ms(lambda t: crop.locate(t), x, args.repeat),
                  "cell_crop_ms": _ms(lambda t: crop(t), x, args.repeat)}
    finally:
        layers.block_mean, layers.box_mean = ours
    print(json.dumps({
        "machine": machine(), "img": [h, w], "batch": args.batch,
        "leuko": leuko, "baseline_avg_pool2d": pooled,
        "ratio_locate": round(leuko["locate_ms"] / pooled["locate_ms"], 3),
        "ratio_cell_crop": round(leuko["cell_crop_ms"] / pooled["cell_crop_ms"], 3),
    }, indent=1))


if __name__ == "__main__":
    main()
