"""Shared fixtures: small synthetic datasets made on the fly (no real data needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leukocli.synth import make_dataset


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One planted dataset for the whole session: 6 smears per class at 120x160, 2 siblings
    each, with planted.json and sources.csv. Treat it as read-only (copy it to modify it)."""
    out = tmp_path_factory.mktemp("synth") / "data"
    make_dataset(out, per_class=6, size=(120, 160), seed=7, siblings=2, plant=True)
    return out


@pytest.fixture(scope="session")
def synth_planted(synth_dir: Path) -> dict[str, Any]:
    """The planted cases of `synth_dir` (content of its planted.json)."""
    planted: dict[str, Any] = json.loads((synth_dir / "planted.json").read_text())
    return planted


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `tiny_dataset(per_class=4, size=(80, 80), siblings=1, plant=False, seed=0)`
    writes a fresh dataset under this test's tmp_path and returns its folder."""
    counter = iter(range(1_000_000))

    def make(
        per_class: int = 4,
        size: tuple[int, int] = (80, 80),
        siblings: int = 1,
        plant: bool = False,
        seed: int = 0,
        name: str | None = None,
    ) -> Path:
        out = tmp_path / (name or f"tiny{next(counter)}")
        make_dataset(out, per_class=per_class, size=size, seed=seed, siblings=siblings, plant=plant)
        return out

    return make


def make_tiny_run(
    root: Path, per_class: int = 4, seed: int = 1, size: tuple[int, int] = (75, 75)
) -> tuple[Path, Path]:
    """A synthetic dataset and a 2-epoch tiny CNN saved as a run; returns (data, run_dir).

    Shared by the evaluate and predict tests, which need a real saved model but not a
    good one.
    """
    import keras

    from leukocli.bundle import save_bundle
    from leukocli.dataset import scan
    from leukocli.loader import build_dataset
    from leukocli.synth import make_dataset

    data = root / "data"
    make_dataset(data, per_class=per_class, size=size, seed=seed, siblings=2, plant=False)
    ds = scan(data)
    index = {c: i for i, c in enumerate(ds.classes)}
    keras.utils.set_random_seed(0)
    inp = keras.Input((*size, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(ds.classes), activation="softmax")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    train = build_dataset(
        [str(r.path) for r in ds.records], [index[r.label] for r in ds.records], size, 8,
        training=True,
    )
    model.fit(train, epochs=2, verbose=0)
    run = root / "runs" / "tiny"
    save_bundle(run, model, {"classes": ds.classes, "img_size": list(size), "backbone": "tiny"})
    return data, run


def run_leuko(
    *args: str, cwd: Path | None = None, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the installed `leuko` console script as a user would (module fallback)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if quiet:
        env["LEUKO_QUIET"] = "1"
    exe = shutil.which("leuko")
    cmd = [exe] if exe else [sys.executable, "-m", "leukocli.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]
