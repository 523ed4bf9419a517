"""Where the wall time of `leuko predict cell.jpg` goes, for one image.

Runs the command end to end (a subprocess) against the same steps timed inside one fresh
interpreter: interpreter start plus TensorFlow import, model load, and inference.

    python benchmarks/predict_latency.py --model runs/latest --image cell.jpg
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

from _common import machine

STEPS = r"""
import json, sys, time
t0 = time.perf_counter()
import leukocli._tf  # interpreter is already up; this is the TensorFlow import
t1 = time.perf_counter()
from pathlib import Path
from leukocli.modeling.bundle import load_bundle
from leukocli.evaluation.predict import predict_probs
b = load_bundle(Path(sys.argv[1]))
t2 = time.perf_counter()
predict_probs(b, [sys.argv[2]])
t3 = time.perf_counter()
predict_probs(b, [sys.argv[2]])
t4 = time.perf_counter()
print(json.dumps({"tensorflow_import_s": t1 - t0, "model_load_s": t2 - t1,
                  "first_inference_s": t3 - t2, "warm_inference_s": t4 - t3}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="runs/latest")
    ap.add_argument("--image", required=True)
    args = ap.parse_args()
    leuko = shutil.which("leuko") or "leuko"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([leuko, "predict", args.image, "--model", args.model, "--format", "json"],
                   check=True, capture_output=True)
    command = time.perf_counter() - t
    proc = subprocess.run([sys.executable, "-c", STEPS, args.model, args.image],
                          check=True, capture_output=True, text=True)
    parts = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "benchmark": "predict_latency",
        "leuko_predict_one_image_s": round(command, 2),
        "python_start_s": round(interpreter, 3),
        **{k: round(v, 3) for k, v in parts.items()},
        "tensorflow_import_share": round(parts["tensorflow_import_s"] / command, 2),
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
