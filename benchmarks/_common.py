"""Shared bits for the benchmark scripts: machine facts, timing, running leuko, and the
blood-cells source photos (ground truth for measuring, never read by leuko itself).

Every benchmark prints one JSON object holding ratios against a baseline measured in
the same run, because the machines these run on are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """Cores, the CPU flags that matter for TensorFlow, and library versions."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"]
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": model,
        "cpu_flags": [f for f in wanted if f in flags],
        "python": sys.version.split()[0],
        "load_avg_1m": os.getloadavg()[0],
    }
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    return info


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of `repeat` wall-clock runs, in seconds (the least disturbed by neighbours)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def run_leuko(args: Sequence[str], log: Path, ok: Sequence[int] = (0,)) -> float:
    """Run one leuko command, appending its output to `log`; wall seconds. Stops the
    benchmark when the exit code is not in `ok` (1 = some inputs skipped, for evaluate)."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ leuko {' '.join(args)}\n")
        fh.flush()
        rc = subprocess.call(["leuko", *args], stdout=fh, stderr=subprocess.STDOUT)
    if rc not in ok:
        sys.exit(f"leuko {args[0]} failed with exit {rc}; see {log}")
    return time.perf_counter() - start


def class_file_key(paths: Any) -> Any:
    """CLASS/name of each path (a pandas Series): how images are matched to sources.csv."""
    parts = paths.astype(str).str.replace("\\", "/", regex=False).str.split("/")
    return parts.str[-2] + "/" + parts.str[-1]


def read_sources(path: Path | str) -> Any:
    """Ground truth as a DataFrame (key, source): the real dataset's label,file,source or
    leuko synth's file (CLASS/name),source."""
    import pandas as pd

    truth = pd.read_csv(path)
    if "label" in truth.columns:
        truth["key"] = truth["label"] + "/" + truth["file"]
    else:
        truth["key"] = class_file_key(truth["file"])
    return truth[["key", "source"]]
