"""CLI start-up: `leuko --help` against `python -c pass` and `python -c "import tensorflow"`.

Help must never pay for TensorFlow; this shows by how much it does not.

    python benchmarks/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from functools import partial

from _common import best_of, machine


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    leuko = shutil.which("leuko") or "leuko"
    py = sys.executable
    cases = {
        "python_pass_s": [py, "-c", "pass"],
        "leuko_help_s": [leuko, "--help"],
        "leuko_train_help_s": [leuko, "train", "--help"],
        "python_import_tensorflow_s": [py, "-c", "import tensorflow"],
    }
    t = {name: best_of(partial(_run, cmd), args.repeat) for name, cmd in cases.items()}
    out = {
        "benchmark": "cli_startup",
        **{k: round(v, 3) for k, v in t.items()},
        "help_over_python": round(t["leuko_help_s"] / t["python_pass_s"], 2),
        "help_over_import_tensorflow": round(
            t["leuko_help_s"] / t["python_import_tensorflow_s"], 3
        ),
        "repeat": args.repeat,
        "machine": machine(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
