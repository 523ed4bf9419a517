"""How close `leuko predict DIR` comes to the model's own forward-pass rate.

Builds an untrained InceptionResNetV2 (weights none; speed does not depend on weights)
at the run's input size, saves it as a run with leukocli.modeling.bundle.save_bundle, then measures:

1. `leuko predict DIR --format csv > /dev/null` on N real images (end to end, a subprocess,
   including Python/TensorFlow start-up and model loading), and the same command on one
   image (start-up cost, subtracted for the steady-state rate);
2. `model.predict_on_batch` on in-memory float32 tensors of batch 64 (forward pass only),
   and leuko's own predict path (`predict_probs`: tf.data read/decode/batch + model) in
   this process, each twice, before and after the CLI runs, since load on a shared
   machine drifts.

Prints one JSON object. Run by hand; never by the test suite:

    python benchmarks/predict_throughput.py /work/shared/data/blood-cells/images/TRAIN --n 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _pick_images(root: Path, n: int) -> list[Path]:
    """n images spread evenly over the class folders (sorted, so runs are repeatable)."""
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    per = [sorted(d.glob("*.jpeg")) + sorted(d.glob("*.jpg")) for d in classes]
    out: list[Path] = []
    i = 0
    while len(out) < n and any(i < len(p) for p in per):
        for files in per:
            if i < len(files) and len(out) < n:
                out.append(files[i])
        i += 1
    return out


def _build_run(run: Path, img_size: tuple[int, int]) -> None:
    import keras

    from leukocli.modeling.bundle import save_bundle

    inp = keras.Input((*img_size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)  # InceptionResNetV2 preprocessing
    backbone = keras.applications.InceptionResNetV2(
        include_top=False, weights=None, input_shape=(*img_size, 3), pooling="avg"
    )
    out = keras.layers.Dense(4, activation="softmax")(backbone(x))
    save_bundle(
        run,
        keras.Model(inp, out),
        {
            "classes": ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"],
            "img_size": list(img_size),
            "backbone": "inceptionresnetv2",
            "preprocessing": "inside the model: Rescaling(1/127.5, offset=-1)",
        },
    )


def _time_cli(args: list[str]) -> float:
    exe = shutil.which("leuko")
    cmd = [exe] if exe else [sys.executable, "-m", "leukocli"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    res = subprocess.run(
        [*cmd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"leuko {' '.join(args)} failed ({res.returncode}): {res.stderr[-500:]}")
    return took


def _forward_rate(bundle: object, batch: int, n_batches: int) -> float:
    """Images/s of predict_on_batch on an in-memory float32 tensor (no decoding at all)."""
    import numpy as np
    import tensorflow as tf

    model = bundle.model  # type: ignore[attr-defined]
    h, w = bundle.img_size  # type: ignore[attr-defined]
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, h, w, 3)), tf.float32)
    model.predict_on_batch(x)  # trace and warm up, not timed
    start = time.perf_counter()
    for _ in range(n_batches):
        model.predict_on_batch(x)
    return batch * n_batches / (time.perf_counter() - start)


def _pipeline_rate(bundle: object, paths: list[Path], batch: int) -> float:
    """Marginal images/s of leuko's own predict path (tf.data read/decode/batch + model).

    Timed on one batch and on all of `paths`; the difference removes the per-call fixed
    cost (building the dataset, filling the first batch) that a long run pays only once.
    """
    from leukocli.evaluation.predict import predict_probs

    predict_probs(bundle, paths[:batch], batch)  # type: ignore[arg-type]  # warm up
    start = time.perf_counter()
    predict_probs(bundle, paths[:batch], batch)  # type: ignore[arg-type]
    one = time.perf_counter() - start
    start = time.perf_counter()
    predict_probs(bundle, paths, batch)  # type: ignore[arg-type]
    full = time.perf_counter() - start
    return (len(paths) - batch) / max(full - one, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", type=Path, help="class-folder tree of real images")
    ap.add_argument("--n", type=int, default=1000, help="images for leuko predict")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--forward-batches", type=int, default=4)
    ap.add_argument("--img", default="240x320", help="HEIGHTxWIDTH")
    ap.add_argument("--work", type=Path, default=Path("/tmp/leuko-bench"))
    args = ap.parse_args()

    h, w = (int(v) for v in args.img.lower().split("x"))
    work: Path = args.work
    if work.exists():
        shutil.rmtree(work)
    images_dir = work / "images"
    images_dir.mkdir(parents=True)
    picked = _pick_images(args.images, args.n)
    for i, src in enumerate(picked):  # links, so the real data is never copied
        (images_dir / f"{i:05d}_{src.parent.name}_{src.name}").symlink_to(src.resolve())
    run = work / "run"
    _build_run(run, (h, w))

    from leukocli.modeling.bundle import load_bundle

    bundle = load_bundle(run)
    sample = picked[: args.batch * (args.forward_batches + 1)]
    # Load on a shared machine drifts: interleave the measurements and average each kind.
    forward = [_forward_rate(bundle, args.batch, args.forward_batches)]
    pipeline = [_pipeline_rate(bundle, sample, args.batch)]
    one = str(next(images_dir.iterdir()))
    startup = _time_cli(["predict", one, "--model", str(run), "--format", "csv"])
    total = _time_cli(
        ["predict", str(images_dir), "--model", str(run), "--format", "csv",
         "--batch", str(args.batch)]
    )
    forward.append(_forward_rate(bundle, args.batch, args.forward_batches))
    pipeline.append(_pipeline_rate(bundle, sample, args.batch))
    fwd = sum(forward) / len(forward)
    pipe = sum(pipeline) / len(pipeline)

    n = len(picked)
    e2e = n / total
    steady = n / max(total - startup, 1e-9)
    print(
        json.dumps(
            {
                "images": n,
                "img_size": [h, w],
                "batch": args.batch,
                "cpu_count": os.cpu_count(),
                "predict_wall_s": round(total, 2),
                "startup_wall_s_one_image": round(startup, 2),
                "predict_images_per_s_end_to_end": round(e2e, 2),
                "predict_images_per_s_steady": round(steady, 2),
                "forward_images_per_s": round(fwd, 2),
                "forward_images_per_s_runs": [round(f, 2) for f in forward],
                "inprocess_pipeline_images_per_s": round(pipe, 2),
                "inprocess_pipeline_runs": [round(p, 2) for p in pipeline],
                "images_per_timing": args.batch * args.forward_batches,
                "note": "inprocess_pipeline is the marginal rate over the same number of "
                "images as forward; cli_steady subtracts the one-image CLI wall time",
                "ratio_inprocess_pipeline": round(pipe / fwd, 3),
                "ratio_cli_end_to_end": round(e2e / fwd, 3),
                "ratio_cli_steady": round(steady / fwd, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
