"""Exported models against the Keras model: same answers, sizes, speed, one-image latency.

Exports a run to SavedModel, ONNX and LiteRT (float32) into a temporary folder, then on
N real images reports, for each format: the largest absolute difference in probabilities
against the Keras model (as loaded, and rebuilt in float32 as exported), the share of
images with the same predicted class, the artefact's size, images/s in batches of 32,
and the median wall time of `leuko predict IMAGE --model ARTEFACT` over several runs.
Keras, in the same run, is the baseline of every ratio.

    python benchmarks/export_parity.py --model runs/latest --images DIR --n 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
        else path.stat().st_size


def _rate(model: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    model.predict_on_batch(x[:32])  # warm up
    start = time.perf_counter()
    out = np.concatenate([np.asarray(model.predict_on_batch(x[a : a + 32]))
                          for a in range(0, len(x), 32)])
    return out, len(x) / (time.perf_counter() - start)


def _wall(model: Path, image: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "leukocli", "predict", str(image), "--model",
                        str(model), "--format", "csv"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    from leukocli.data.dataset import find_images
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.export import export_run, float32_model
    from leukocli.modeling.runtimes import load_images

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5, help="one-image predictions timed per format")
    args = ap.parse_args()
    files = sorted(find_images([args.images])[0])
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.n, len(files)), False))]
    bundle = load_bundle(args.model)
    x = load_images(files, bundle.img_size)
    keras_probs, keras_rate = _rate(bundle.model, x)
    f32_probs, _ = _rate(float32_model(bundle.model), x)
    out: dict[str, Any] = {"benchmark": "export_parity", "model": str(args.model),
                           "images": len(files), "keras": {"images_per_s": round(keras_rate, 1)}}
    out["keras"]["one_image_wall_s"] = _wall(args.model, files[0], args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("savedmodel", "m"), ("onnx", "m.onnx"), ("litert", "m.tflite")):
            path = Path(tmp) / name
            export_run(args.model, fmt, "none", path)
            probs, rate = _rate(load_bundle(path).model, x)
            out[fmt] = {
                "max_abs_diff_vs_keras": float(np.abs(probs - keras_probs).max()),
                "max_abs_diff_vs_float32_keras": float(np.abs(probs - f32_probs).max()),
                "same_class": float((probs.argmax(1) == keras_probs.argmax(1)).mean()),
                "size_mb": round(_size(path) / 1e6, 2), "images_per_s": round(rate, 1),
                "speed_ratio_vs_keras": round(rate / keras_rate, 2),
                "one_image_wall_s": _wall(path, files[0], args.runs),
            }
    out["keras_model_size_mb"] = round(_size(Path(str(bundle.run_dir or args.model)) /
                                             "model.keras") / 1e6, 2) if bundle.run_dir else None
    out["machine"] = machine()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
