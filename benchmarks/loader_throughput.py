"""Training-pipeline throughput: leuko's tf.data loader against a sequential Pillow loop.

Both do the same work per image: read, decode, resize to HxW, random flip and rotation,
then batch. The loader's rate must stay well above the model's training rate (about
3 images/s for InceptionResNetV2 at 240x320 on two cores) so it is never the bottleneck.

    python benchmarks/loader_throughput.py --data ../shared/data/blood-cells/images/TRAIN
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from _common import machine
from PIL import Image


def _images(root: Path, n: int) -> list[str]:
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    random.Random(0).shuffle(files)
    return files[:n]


def pillow_loop(paths: list[str], size: tuple[int, int], batch: int) -> float:
    """The baseline a user might write: one image at a time, in Python."""
    rng = random.Random(0)
    start = time.perf_counter()
    buf: list[np.ndarray] = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
            im = im.rotate(rng.uniform(-180, 180), resample=Image.Resampling.BILINEAR)
            buf.append(np.asarray(im, dtype=np.float32))
        if len(buf) == batch:
            np.stack(buf)
            buf = []
    return len(paths) / (time.perf_counter() - start)


def leuko_loader(paths: list[str], size: tuple[int, int], batch: int, augment: bool) -> float:
    from leukocli.modeling.loader import build_dataset

    ds = build_dataset(paths, [0] * len(paths), size, batch, training=True, augment=augment)
    for _ in ds.take(2):  # build the graph and fill the prefetch buffer first
        pass
    start = time.perf_counter()
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n / (time.perf_counter() - start)


def keras_layers_pipeline(paths: list[str], size: tuple[int, int], batch: int) -> float:
    """leuko's first loader: the same decode, then Keras's chained augmentation layers
    (flip, rotation, translation, zoom: three resampling passes per image). Kept here as
    the measured reason for the fused transform in leukocli.modeling.augment."""
    import keras

    from leukocli._tf import tf
    from leukocli.modeling.loader import load_image

    chain = keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomRotation(0.5, fill_mode="reflect"),
        keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect"),
        keras.layers.RandomZoom(0.05, fill_mode="reflect"),
    ])
    ds = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(lambda p: load_image(p, size), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch)
        .map(lambda x: chain(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    for _ in ds.take(2):
        pass
    start = time.perf_counter()
    n = sum(int(x.shape[0]) for x in ds)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--img", default="240x320")
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    h, w = (int(v) for v in args.img.lower().split("x"))
    paths = _images(args.data, args.n)
    base = pillow_loop(paths, (h, w), args.batch)
    aug = leuko_loader(paths, (h, w), args.batch, augment=True)
    plain = leuko_loader(paths, (h, w), args.batch, augment=False)
    chained = keras_layers_pipeline(paths, (h, w), args.batch)
    base2 = pillow_loop(paths, (h, w), args.batch)  # again: load on a shared box drifts
    baseline = (base + base2) / 2
    print(json.dumps({
        "benchmark": "loader_throughput",
        "images": len(paths),
        "img": args.img,
        "batch": args.batch,
        "pillow_loop_img_per_s": round(baseline, 1),
        "leuko_train_pipeline_img_per_s": round(aug, 1),
        "leuko_pipeline_no_augment_img_per_s": round(plain, 1),
        "ratio_vs_pillow": round(aug / baseline, 2),
        "ratio_no_augment_vs_pillow": round(plain / baseline, 2),
        "keras_layers_augment_img_per_s": round(chained, 1),
        "ratio_fused_vs_keras_layers": round(aug / chained, 2),
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
