"""Is the loader the bottleneck? Training-loop images/s vs. the same train step on in-memory data.

For each precision, builds the model as `leuko train` does (weights none), then times
`model.fit` over (a) the real tf.data pipeline from a manifest (read, decode, resize,
augment, batch, prefetch) and (b) one batch already in memory, repeated. Same compiled
train function for both, so the ratio a/b is the share of step throughput the loader
keeps (aim: >= 0.9). Also times the loader alone. Prints one JSON object.

    python benchmarks/train_throughput.py --train /tmp/split/train.csv \
        --img 240x320 --batch 20 --steps 12 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from leukocli.data.dataset import parse_size, scan  # noqa: E402
from leukocli.modeling.loader import build_dataset  # noqa: E402
from leukocli.modeling.model import build_model  # noqa: E402


class _BatchClock(keras.callbacks.Callback):
    """Timestamps each finished batch; the rate counts only batches after warm-up."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.times.append(time.perf_counter())


def _fit_rate(
    model: keras.Model, ds: tf.data.Dataset, batch: int, warmup: int, steps: int
) -> float:
    clock = _BatchClock()
    model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, callbacks=[clock], verbose=0)
    t = clock.times
    return steps * batch / (t[-1] - t[warmup - 1])


def _loader_rate(ds: tf.data.Dataset, batch: int, warmup: int, steps: int) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="training manifest CSV (or class folder)")
    ap.add_argument("--img", default="240x320")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--backbone", default="inceptionresnetv2")
    ap.add_argument("--precisions", default="float32,mixed_bfloat16")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    ap.add_argument("--no-augment", action="store_true")
    args = ap.parse_args()
    warmup = max(1, args.warmup)
    size = parse_size(args.img)
    data = scan(args.train, check="none")
    classes = sorted(data.classes)
    paths = [str(r.path) for r in data.records]
    labels = [classes.index(r.label) for r in data.records]

    out: dict[str, Any] = {
        "backbone": args.backbone, "img": list(size), "batch": args.batch,
        "steps": args.steps, "warmup": warmup, "augment": not args.no_augment,
        "train_images": len(paths), "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__, "results": {},
    }
    pipeline = build_dataset(
        paths, labels, size, args.batch, training=True, augment=not args.no_augment, seed=0
    ).repeat()
    out["loader_only_img_s"] = round(_loader_rate(pipeline, args.batch, warmup, args.steps * 2), 2)

    for precision in args.precisions.split(","):
        keras.mixed_precision.set_global_policy(precision)
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        model = build_model(args.backbone, size, len(classes), weights=None)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        x, y = next(iter(pipeline))
        memory = tf.data.Dataset.from_tensors((x, y)).repeat()
        # the first fit traces the train function; both measurements then share it
        # memory, pipeline, memory again: a shared box's load drifts, so bracket the loop
        before = _fit_rate(model, memory, args.batch, warmup, args.steps)
        loop = _fit_rate(model, pipeline, args.batch, warmup, args.steps)
        after = _fit_rate(model, memory, args.batch, warmup, args.steps)
        in_memory = (before + after) / 2
        out["results"][precision] = {
            "training_loop_img_s": round(loop, 2),
            "in_memory_step_img_s": round(in_memory, 2),
            "in_memory_before_after": [round(before, 2), round(after, 2)],
            "ratio": round(loop / in_memory, 3),
            "total_s": round(time.perf_counter() - t0, 1),
        }
        keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
