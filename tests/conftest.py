"""Shared fixtures: small synthetic datasets and tiny models made on the fly (no real data).

CLI tests run in-process through Typer's CliRunner (`invoke`), which sees the same exit
codes and stderr lines a shell does; a subprocess (`run_leuko`) is kept only where a
real process matters: signals, and the help path not importing TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on two cores: one TensorFlow thread per worker, not two each contending
    for _var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from leukocli.data.synth import make_dataset


# --------------------------------------------------------------------------- the cache
@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """leuko's cache (sibling features and groups; LEUKO_CACHE_DIR) in this session's temp
    folder, for this process and every leuko it starts: a test run never writes the user's
    ~/.cache/leuko, nor reuses what an earlier run left there (a test may narrow it further)."""
    cache = tmp_path_factory.mktemp("leuko-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEUKO_CACHE_DIR", str(cache))
        yield cache


# --------------------------------------------------------------------------- running leuko
@dataclass
class Run:
    """How one command ended: exit code and the two streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def one_line_error(self, code: int = 2, *fragments: str) -> str:
        """Assert the command failed with `code` and exactly one error line, no traceback."""
        assert self.code == code, (self.code, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr + self.stdout, self.stderr
        assert len(self.error_lines) == 1, self.stderr
        line = self.error_lines[0]
        for fragment in fragments:
            assert fragment in line, (fragment, line)
        return line


def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run `leuko ARGS` in this process (Typer's CliRunner), optionally inside `cwd`."""
    from leukocli.cli import app

    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner(env={"LEUKO_QUIET": "1", **(env or {})}).invoke(
            app, list(args), catch_exceptions=False
        )
    finally:
        os.chdir(previous)
    return Run(result.exit_code, result.stdout, result.stderr)


def run_leuko(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: int = 120
) -> Run:
    """Run the installed `leuko` console script in a new process, as a user would."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    exe = shutil.which("leuko")
    cmd = [exe] if exe else [sys.executable, "-m", "leukocli"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class FreshPredict:
    """`leuko predict` run in a new interpreter: its outcome, what it printed, and whether
    TensorFlow or Keras were imported on the way."""

    code: int
    tensorflow: bool
    keras: bool
    stdout: str  # the command's own output (the probe's last line removed)
    stderr: str


def predict_in_fresh_process(*args: str) -> FreshPredict:
    """`leuko predict ARGS` in a new process, which then reports the modules it loaded."""
    script = (
        "import sys, json\n"
        "from leukocli.cli import app\n"
        f"code = app(['predict', *{list(args)!r}], standalone_mode=False) or 0\n"
        "print(json.dumps([code, 'tensorflow' in sys.modules, 'keras' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    code, tf_loaded, keras_loaded = json.loads(lines[-1])
    return FreshPredict(code, tf_loaded, keras_loaded,
                        proc.stdout[: proc.stdout.rindex(lines[-1])], proc.stderr)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links as their target text): 'nothing changed'."""
    out: dict[str, str] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- data
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

    def make(per_class: int = 4, size: tuple[int, int] = (80, 80), siblings: int = 1,
             plant: bool = False, seed: int = 0, name: str | None = None) -> Path:
        out = tmp_path / (name or f"tiny{next(counter)}")
        make_dataset(out, per_class=per_class, size=size, seed=seed, siblings=siblings,
                     plant=plant)
        return out

    return make


# --------------------------------------------------------------------------- models
def make_tiny_run(
    root: Path, per_class: int = 4, seed: int = 1, size: tuple[int, int] = (75, 75)
) -> tuple[Path, Path]:
    """A synthetic dataset and a 2-epoch tiny CNN saved as a run; returns (data, run_dir).

    For tests that need a real saved model but not a good one.
    """
    import keras

    from leukocli.data.dataset import scan
    from leukocli.modeling.bundle import save_bundle
    from leukocli.modeling.loader import build_dataset
    from leukocli.modeling.model import build_model

    data = root / "data"
    make_dataset(data, per_class=per_class, size=size, seed=seed, siblings=2, plant=False)
    ds = scan(data)
    index = {c: i for i, c in enumerate(ds.classes)}
    keras.utils.set_random_seed(0)
    # a real leuko model (leuko refuses any other), as small as one gets: compact, no crop
    model = build_model("compact", size, len(ds.classes), crop_cell=0, head_filters=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    train = build_dataset(
        [str(r.path) for r in ds.records], [index[r.label] for r in ds.records], size, 8,
        training=True,
    )
    model.fit(train, epochs=2, verbose=0)
    run = root / "runs" / "tiny"
    save_bundle(run, model, {"classes": ds.classes, "img_size": list(size), "backbone": "compact"})
    return data, run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny saved run for the whole session (read-only: copy it to modify it)."""
    return make_tiny_run(tmp_path_factory.mktemp("tinyrun"))


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    """Run the test inside its tmp_path (for the working-directory conventions)."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)
