"""How long until training's first step is done: Keras's default compile vs leuko's.

Keras makes the optimizer's slots and the metric's counters while it traces the train
step; TensorFlow then traces the step a second time. leuko's `compile_for_training`
makes them first, so the step is traced once. Both are timed here in one process, on
the same backbone, size and precision, alternating (baseline, leuko, baseline, leuko)
so that warm caches favour neither. The time covers building the model, compiling and
`fit` over one batch of random pixels (the first step is nearly all tracing). Prints one
JSON object with the ratio leuko / baseline (below 1 is faster).

    python benchmarks/train_startup.py --backbone inceptionresnetv2 --img 240x320 --batch 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import machine  # noqa: E402

from leukocli.data.dataset import parse_size  # noqa: E402
from leukocli.modeling.model import build_model  # noqa: E402
from leukocli.training.hardware import pick_precision  # noqa: E402
from leukocli.training.schedule import compile_for_training  # noqa: E402


def _first_step_s(backbone: str, size: tuple[int, int], batch: int, leuko: bool) -> float:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, *size, 3)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 4, batch), 4)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    start = time.perf_counter()
    model = build_model(backbone, size, 4, weights=None)
    if leuko:
        compile_for_training(model, keras.optimizers.Adam(1e-3), 0.0)
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                      metrics=["accuracy"])
    model.fit(ds, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    keras.backend.clear_session()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="inceptionresnetv2")
    ap.add_argument("--img", default="240x320")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--pairs", type=int, default=2, help="(baseline, leuko) pairs to time")
    args = ap.parse_args()
    size = parse_size(args.img)
    precision = pick_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    times: dict[str, list[float]] = {"keras_default": [], "leuko": []}
    for _ in range(args.pairs):
        times["keras_default"].append(_first_step_s(args.backbone, size, args.batch, False))
        times["leuko"].append(_first_step_s(args.backbone, size, args.batch, True))
    base, ours = min(times["keras_default"]), min(times["leuko"])
    out: dict[str, Any] = {
        "machine": machine(), "backbone": args.backbone, "img": list(size),
        "batch": args.batch, "precision": precision,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "best_s": {"keras_default": round(base, 2), "leuko": round(ours, 2)},
        "ratio_leuko_to_default": round(ours / base, 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
