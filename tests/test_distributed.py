"""Distribution strategies, tested on CPU: mirrored over two logical devices, and two real
multi-worker processes on loopback ports (both finish with identical models; when one
is killed, the other stops with one line instead of hanging)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leukocli.data.synth import make_dataset

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "LEUKO_QUIET": "1"}
ENV.pop("TF_CONFIG", None)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 synthetic smears at 48x48 (8 train, 4 val) as two manifests."""
    base = tmp_path_factory.mktemp("dist")
    make_dataset(base / "data", per_class=3, size=(48, 48), seed=3, plant=False)
    rows = {"train": ["path,label"], "val": ["path,label"]}
    for cls in sorted(p for p in (base / "data").iterdir() if p.is_dir()):
        for i, f in enumerate(sorted(cls.glob("*.jpeg"))):
            rows["val" if i == 0 else "train"].append(f"{f},{cls.name}")
    for name, lines in rows.items():
        (base / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return base / "train.csv", base / "val.csv"


def _train_args(small: tuple[Path, Path], out: Path, strategy: str, epochs: int = 1) -> list[str]:
    return ["train", "--train", str(small[0]), "--val", str(small[1]), "--backbone", "compact",
            "--img", "48x48", "--crop-cell", "0", "--epochs", str(epochs), "--batch", "4",
            "--precision", "float32", "--strategy", strategy, "--out", str(out)]


def test_mirrored_over_two_logical_cpus(small: tuple[Path, Path], tmp_path: Path) -> None:
    """Logical devices must be configured before TensorFlow starts: a fresh interpreter."""
    script = f"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from leukocli.cli import app
sys.exit(app({_train_args(small, tmp_path / "m", "mirrored")!r}, standalone_mode=False))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "m" / "leuko.json").read_text())
    assert meta["strategy"].startswith("mirrored over 2 device(s)")
    assert meta["epochs_done"] == 1


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(small: tuple[Path, Path], tmp_path: Path, epochs: int) -> list[subprocess.Popen]:
    ports = _ports(2)
    procs = []
    for i in (0, 1):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": i}}
        env = {**ENV, "TF_CONFIG": json.dumps(tf_config), "LEUKO_WORKER_TIMEOUT": "20",
               "LEUKO_QUIET": ""}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "leukocli", *_train_args(small, tmp_path / f"w{i}",
                                                             "multiworker", epochs)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    return procs


def test_two_workers_train_one_model(small: tuple[Path, Path], tmp_path: Path) -> None:
    import keras

    procs = _workers(small, tmp_path, epochs=2)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    metas = [json.loads((tmp_path / f"w{i}" / "leuko.json").read_text()) for i in (0, 1)]
    assert metas[0]["strategy"].startswith("multi-worker mirrored (2 worker(s), this is worker:0")
    assert metas[1]["strategy"].startswith("multi-worker mirrored (2 worker(s), this is worker:1")
    models = [keras.models.load_model(tmp_path / f"w{i}" / "model.keras", compile=False)
              for i in (0, 1)]
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # gradients and moving statistics agree


def test_killing_one_worker_stops_the_other_with_one_line(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    survivor, victim = _workers(small, tmp_path, epochs=200)
    assert survivor.stderr is not None
    for line in survivor.stderr:  # wait until training really runs on both
        if line.startswith("epoch 1/"):
            break
    else:
        pytest.fail("the workers never finished an epoch together")
    victim.kill()
    victim.wait(timeout=60)
    _, err = survivor.communicate(timeout=120)  # no hang: the peer's loss is noticed
    assert survivor.returncode == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another training worker stopped" in errors[0], err[-2000:]
    assert "--resume --out" in errors[0] and "Traceback" not in err
    meta = json.loads((tmp_path / "w0" / "leuko.json").read_text())
    assert meta["status"] == "interrupted"


def test_multiworker_without_tf_config_trains_as_one_worker(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    proc = subprocess.run([sys.executable, "-m", "leukocli",
                           *_train_args(small, tmp_path / "w", "multiworker")],
                          capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "w" / "leuko.json").read_text())
    assert meta["strategy"].startswith("multi-worker mirrored (1 worker(s)")
