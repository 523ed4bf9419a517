"""`leuko train`: run directories a user can trust, resume, and errors before any model."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import invoke

from leukocli.data.synth import make_dataset
from leukocli.errors import LeukoError
from leukocli.modeling.bundle import load_bundle
from leukocli.modeling.model import build_model, get_backbone
from leukocli.training.callbacks import CtrlC
from leukocli.training.hardware import cpu_has_fast_bf16, pick_precision
from leukocli.training.loop import train
from leukocli.training.options import TrainOptions

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "LEUKO_QUIET": "1"}


def _manifests(root: Path, out: Path, val_per_class: int) -> tuple[Path, Path]:
    """Write train.csv / val.csv: the first `val_per_class` files of each class go to val."""
    rows: dict[str, list[list[str]]] = {"train": [], "val": []}
    for cls in CLASSES:
        files = sorted((root / cls).glob("*.jpeg"))
        for i, f in enumerate(files):
            rows["val" if i < val_per_class else "train"].append([str(f), cls])
    out.mkdir(parents=True, exist_ok=True)
    for name, rs in rows.items():
        with (out / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label"])
            writer.writerows(rs)
    return out / "train.csv", out / "val.csv"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """16 synthetic smears at 75x75 (12 train, 4 val)."""
    base = tmp_path_factory.mktemp("train_small")
    make_dataset(base / "data", per_class=4, size=(75, 75), seed=3, plant=False)
    return _manifests(base / "data", base / "splits", val_per_class=1)


def _opts(split: tuple[Path, Path], **kw: object) -> TrainOptions:
    base: dict[str, object] = dict(
        train_csv=str(split[0]), val_csv=str(split[1]), img_size=(75, 75), batch=4, epochs=1,
        backbone="compact", weights="none", precision="float32", strategy="default",
        crop_cell=0,  # 75x75 smears: a 128 crop would only upsample them
    )
    base.update(kw)
    return TrainOptions(**base)  # type: ignore[arg-type]


def _check_run_dir(run_dir: Path, epochs: int, backbone: str, size: list[int] | None = None
                   ) -> dict:
    names = {p.name for p in run_dir.iterdir()}
    assert {"model.keras", "leuko.json", "history.csv", "curves.png"} <= names
    assert "checkpoints" not in names  # a finished run leaves no resume state behind
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((run_dir / "leuko.json").read_text())
    assert meta["classes"] == CLASSES and meta["img_size"] == (size or [75, 75])
    assert meta["backbone"] == backbone and meta["status"] == "finished"
    assert meta["epochs_planned"] == epochs and meta["epochs_done"] == epochs
    for key in ("tensorflow_version", "leuko_version", "seed", "precision", "strategy",
                "preprocessing", "wall_time_s", "augment", "weights"):
        assert key in meta, key
    assert meta["manifests"]["train"]["rows"] == 12 and meta["manifests"]["val"]["rows"] == 4
    assert meta["manifests"]["train"]["fingerprint"].startswith("sha256:")
    assert meta["best"]["epoch"] >= 1 and "val_accuracy" in meta["best"]
    hist = pd.read_csv(run_dir / "history.csv")
    assert hist["epoch"].tolist() == list(range(epochs))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(hist.columns)
    latest = run_dir.parent / "latest"
    assert latest.resolve() == run_dir.resolve()
    if backbone == "inceptionresnetv2":
        return meta  # loading a 230 MB model again adds nothing but time
    # evaluate/predict load it with nothing but the run directory
    bundle = load_bundle(latest)
    x = np.full((2, *(size or [75, 75]), 3), 128.0, dtype="float32")
    probs = np.asarray(bundle.model(x, training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    return meta


def test_compact_end_to_end(small: tuple[Path, Path], tmp_path: Path) -> None:
    result = train(_opts(small, epochs=2), out=tmp_path / "runs" / "c")
    assert not result.interrupted and result.epochs_done == 2
    meta = _check_run_dir(tmp_path / "runs" / "c", 2, "compact")
    assert meta["weights"] is None
    # the cpu recipe keeps the last epoch, so validation did not choose the model
    assert meta["options"]["keep"] == "last" and meta["best"]["epoch"] == 2
    assert "Rescaling(1/255)" in meta["preprocessing"]


def test_keras_applications_backbone_end_to_end(small: tuple[Path, Path], tmp_path: Path) -> None:
    """A nested keras.applications backbone (the same code path as the paper's default)."""
    result = train(_opts(small, backbone="mobilenetv2", img_size=(32, 32)),
                   out=tmp_path / "runs" / "mnv2")
    assert result.epochs_done == 1
    meta = _check_run_dir(tmp_path / "runs" / "mnv2", 1, "mobilenetv2", size=[32, 32])
    assert "[-1, 1]" in meta["preprocessing"]


def test_inceptionresnetv2_takes_raw_pixels_and_scales_them() -> None:
    """The paper's default backbone builds at its minimum size with its scaling inside."""
    model = build_model("inceptionresnetv2", (75, 75), 4)
    assert model.get_layer("scale_to_pm1") is not None
    probs = np.asarray(model(np.full((1, 75, 75, 3), 255.0, "float32"), training=False))
    assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1.0) < 1e-5


@pytest.mark.slow
def test_inceptionresnetv2_end_to_end(small: tuple[Path, Path], tmp_path: Path) -> None:
    """The paper's setup trained and saved for real (230 MB per save; run with -m slow)."""
    result = train(_opts(small, backbone="inceptionresnetv2"), out=tmp_path / "runs" / "irv2")
    assert result.epochs_done == 1
    meta = _check_run_dir(tmp_path / "runs" / "irv2", 1, "inceptionresnetv2")
    assert "[-1, 1]" in meta["preprocessing"]


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    """What Ctrl-C does, deterministically: KeyboardInterrupt right after epoch 1."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            raise KeyboardInterrupt


def test_interrupt_then_resume_reaches_planned_epochs(
    small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "runs" / "r"
    first = train(_opts(small, epochs=3), out=run_dir, extra_callbacks=[_StopAfterFirstEpoch()])
    assert first.interrupted and first.epochs_done == 1
    meta = json.loads((run_dir / "leuko.json").read_text())
    assert meta["status"] == "interrupted"
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "model.keras").exists()
    # resume from another directory, through runs/latest, with the saved options
    monkeypatch.chdir(tmp_path)
    second = train(TrainOptions(epochs=99), out=None, resume=True)
    assert not second.interrupted and second.epochs_done == 3 and second.epochs_planned == 3
    _check_run_dir(run_dir, 3, "compact")


def test_transfer_schedule_with_weights_path(small: tuple[Path, Path], tmp_path: Path) -> None:
    """Pretrained weights from a file: head first (backbone frozen), then fine-tune at lr/10.

    (The same schedule and loading code serve keras.applications backbones; compact keeps
    this fast. test_model covers loading an InceptionResNetV2 weights file.)"""
    source = get_backbone(build_model("compact", (75, 75), 4))
    source.set_weights([w + 0.5 for w in source.get_weights()])
    wpath = tmp_path / "compact_backbone.weights.h5"
    source.save_weights(wpath)
    seen: list[tuple[int, bool]] = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            seen.append((epoch, self.model.get_layer("backbone").trainable))

    result = train(
        _opts(small, weights=str(wpath), epochs=2, lr=1e-3, recipe="paper"),
        out=tmp_path / "runs" / "t", extra_callbacks=[Spy()],
    )
    assert result.epochs_done == 2
    assert seen == [(0, False), (1, True)]
    hist = pd.read_csv(tmp_path / "runs" / "t" / "history.csv")
    assert hist["phase"].tolist() == [1, 2]
    assert hist["learning_rate"].tolist() == pytest.approx([1e-3, 1e-4], rel=1e-3)
    meta = json.loads((tmp_path / "runs" / "t" / "leuko.json").read_text())
    assert meta["weights"] == f"file:{wpath.resolve()}"


def test_warm_start_from_a_run_with_other_classes(small: tuple[Path, Path], tmp_path: Path
                                                  ) -> None:
    """--weights RUN: the earlier run's backbone and crop, a new head for these classes."""
    three = tmp_path / "three"
    three.mkdir()
    for name in ("train", "val"):
        rows = pd.read_csv(small[0 if name == "train" else 1])
        rows[rows["label"] != "MONOCYTE"].to_csv(three / f"{name}.csv", index=False)
    source = train(_opts((three / "train.csv", three / "val.csv"), crop_cell=48, epochs=1),
                   out=tmp_path / "runs" / "src")
    assert source.epochs_done == 1
    result = train(_opts(small, weights=str(tmp_path / "runs" / "src"), epochs=1, crop_cell=None),
                   out=tmp_path / "runs" / "warm")  # one epoch: head only, backbone frozen
    meta = json.loads((tmp_path / "runs" / "warm" / "leuko.json").read_text())
    assert result.epochs_done == 1 and meta["classes"] == CLASSES
    assert meta["weights"] == f"run:{(tmp_path / 'runs' / 'src').resolve()}"
    assert meta["crop_cell"] == 48  # the source's crop, not the recipe's 128
    old = get_backbone(load_bundle(tmp_path / "runs" / "src").model).get_weights()
    new = get_backbone(load_bundle(tmp_path / "runs" / "warm").model).get_weights()
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(LeukoError, match="trained with backbone='compact'"):
        train(_opts(small, backbone="mobilenetv2", weights=str(tmp_path / "runs" / "src")),
              out=tmp_path / "runs" / "never")


def test_shipped_pbc_backbone_trains_offline(small: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--weights pbc: leuko's own backbone, from inside the package, with no download, its
    provenance card complete (the data's CC BY 4.0 licence asks for the credit)."""
    from keras.src.utils import file_utils

    from leukocli.modeling.backbones import WEIGHTS_DIR, shipped_weights

    def offline(*_: object, **__: object) -> str:
        raise AssertionError("--weights pbc tried to download")

    monkeypatch.setattr(file_utils, "get_file", offline)
    card = shipped_weights()["pbc"]
    assert card["backbone"] == "compact" and card["licence"].startswith("CC BY 4.0")
    assert "Acevedo" in card["credit"] and "105474" in card["credit"]
    assert card["held_out"]["accuracy_tta8"] >= 0.97 and len(card["classes"]) == 8
    assert (WEIGHTS_DIR / card["file"]).stat().st_size == card["size_bytes"]
    train(_opts(small, weights="pbc", crop_cell=None, epochs=1), out=tmp_path / "runs" / "p")
    meta = json.loads((tmp_path / "runs" / "p" / "leuko.json").read_text())
    assert meta["crop_cell"] == card["crop_cell"] and meta["crop_scale"] == card["crop_scale"]
    got = get_backbone(load_bundle(tmp_path / "runs" / "p").model).get_weights()
    want = build_model("compact", (75, 75), 4, weights=str(WEIGHTS_DIR / card["file"]))
    for a, b in zip(got, get_backbone(want).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # one epoch trains the head only
    with pytest.raises(LeukoError, match="weights='pbc' is a compact backbone"):
        train(_opts(small, backbone="mobilenetv2", weights="pbc"), out=tmp_path / "runs" / "n")


def test_map_merges_two_datasets_class_names(small: tuple[Path, Path], tmp_path: Path) -> None:
    """--map: a second dataset's lower-case names join the first's classes, in train and val."""
    rows = pd.read_csv(small[0])
    lower = rows.iloc[::2].assign(label=rows["label"].iloc[::2].str.lower())
    mixed = tmp_path / "mixed.csv"
    pd.concat([rows.iloc[1::2], lower]).to_csv(mixed, index=False)
    base = ("train", "--train", str(mixed), "--val", str(small[1]), "--img", "75x75",
            "--batch", "4", "--epochs", "1", "--backbone", "compact", "--weights", "none",
            "--crop-cell", "0", "--precision", "float32")
    invoke(*base, "--out", "runs/unmapped", cwd=tmp_path).one_line_error(
        2, "different classes")
    maps = [a for c in CLASSES for a in ("--map", f"{c.lower()}={c}")]
    run = invoke(*base, *maps, "--out", "runs/mapped", cwd=tmp_path)
    assert run.code == 0, run.output
    meta = json.loads((tmp_path / "runs" / "mapped" / "leuko.json").read_text())
    assert meta["classes"] == CLASSES
    assert meta["options"]["mapping"] == [f"{c.lower()}={c}" for c in CLASSES]
    invoke(*base, "--map", "eosinophil", cwd=tmp_path).one_line_error(2, "OLD=NEW")


def test_compact_learns_synthetic_data(tmp_path: Path) -> None:
    """Well above chance (0.25 for 4 classes) on held-out smears."""
    make_dataset(tmp_path / "data", per_class=30, size=(64, 64), seed=11, plant=False)
    split = _manifests(tmp_path / "data", tmp_path / "splits", val_per_class=8)
    result = train(
        _opts(split, img_size=(64, 64), batch=16, epochs=8, patience=10, seed=1),
        out=tmp_path / "runs" / "learn",
    )
    assert result.best["val_accuracy"] > 0.6, result


def test_library_errors_before_building(small: tuple[Path, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    three = tmp_path / "three.csv"
    rows = pd.read_csv(small[1])
    rows[rows["label"] != "MONOCYTE"].to_csv(three, index=False)
    cases: list[tuple[dict[str, object], str]] = [
        ({"train_csv": str(tmp_path / "nope.csv")}, r"not found: run `lk\.split"),
        ({"val_csv": str(empty)}, r"val split: .*has no rows"),
        ({"val_csv": str(three)}, r"different classes \(only in train: MONOCYTE\)"),
        ({"backbone": "inceptionresnetv2", "img_size": (60, 60)}, r"minimum input is 75x75"),
        ({"backbone": "vgg99"}, r"unknown backbone"),
        ({"precision": "half"}, r"unknown precision 'half'"),
        ({"strategy": "tpu"}, r"unknown strategy 'tpu'"),
        ({"class_weights": "balanced"}, r"unknown class_weights"),
        ({"mapping": ("eosinophil",)}, r"mapping expects OLD=NEW"),
    ]
    for overrides, pattern in cases:
        with pytest.raises(LeukoError, match=pattern):
            train(_opts(small, **overrides), out=tmp_path / "runs" / "never")
        assert not (tmp_path / "runs" / "never").exists()


def test_cli_errors_are_one_line(small: tuple[Path, Path], tmp_path: Path) -> None:
    data = ("--train", str(small[0]), "--val", str(small[1]))
    for args, needle in (
        (("--img", "60x60", "--weights", "none"), "minimum input is 75x75"),
        (("--backbone", "compact", "--keep", "first"), "unknown --keep 'first'"),
        (("--img", "240x"), "HEIGHTxWIDTH"),
        (("--batch", "0"), "--batch must be at least 1"),
        (("--backbone", "compact", "--epochs", "0"), "--epochs must be at least 1"),
    ):
        invoke("train", *data, *args, cwd=tmp_path).one_line_error(2, needle)
    invoke("train", cwd=tmp_path).one_line_error(2, "run `leuko split")
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_saves_state_and_says_how_to_resume(
    small: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "sig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "leukocli", "train", "--train", str(small[0]), "--val",
         str(small[1]), "--img", "75x75", "--batch", "2", "--epochs", "50", "--backbone",
         "compact", "--crop-cell", "0", "--precision", "float32", "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**ENV, "LEUKO_QUIET": ""},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait for the first epoch's summary line
        if line.startswith("epoch 1/50"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"continue with: leuko train --resume --out {run_dir}" in err
    assert "Traceback" not in err
    meta = json.loads((run_dir / "leuko.json").read_text())
    assert meta["status"] == "interrupted" and meta["epochs_done"] >= 1
    assert (run_dir / "checkpoints").is_dir()


def test_precision_auto() -> None:
    import tensorflow as tf

    assert cpu_has_fast_bf16("flags\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert not cpu_has_fast_bf16("flags\t: fpu sse4_2 avx2\n")
    assert pick_precision("float32") == "float32"
    if tf.config.list_physical_devices("GPU"):
        expected = "mixed_float16"
    else:
        expected = "mixed_bfloat16" if cpu_has_fast_bf16() else "float32"
    assert pick_precision("auto") == expected


def test_ctrl_c_is_raised_at_the_next_batch_boundary_and_the_handler_restored() -> None:
    """The signal only sets a flag (TensorFlow's native calls could swallow an exception)."""
    before = signal.getsignal(signal.SIGINT)
    guard = CtrlC()
    guard.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # no exception here: only the flag is set
        assert guard.pressed
        with pytest.raises(KeyboardInterrupt):
            guard.on_train_batch_end(0, {})
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_train_step_makes_no_variable_so_it_is_traced_once(precision: str) -> None:
    """A variable made while Keras traces its step makes TensorFlow trace it twice (the
    slow part of a start); the loss-scale wrapper of mixed_float16 must be built too."""
    import tensorflow as tf

    from leukocli.training.schedule import compile_for_training

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model("compact", (32, 32), 4)
        compile_for_training(model, keras.optimizers.Adam(1e-3), 0.1)
        made: list[str] = []

        def creator(next_creator, **kw):  # type: ignore[no-untyped-def]
            made.append(str(kw.get("name")))
            return next_creator(**kw)

        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        with tf.variable_creator_scope(creator):
            history = model.fit(x, keras.utils.to_categorical([0, 1, 2, 3], 4), verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert made == []
    assert set(history.history) == {"loss", "accuracy"}  # the names run folders record


def test_the_first_batch_of_each_fit_says_why_it_is_slow() -> None:
    """While the train step is built the bar stands at zero; its note says why, once per
    fit (a transfer run's second phase builds a new step)."""
    from contextlib import contextmanager

    from leukocli._util.progress import Reporter
    from leukocli.training.callbacks import FIRST_STEP_NOTE, EpochProgress

    updates: list[tuple[str, int, object]] = []

    class Recording(Reporter):
        @contextmanager
        def task(self, description: str, total: int | None):  # type: ignore[no-untyped-def]
            yield lambda n=1, **f: updates.append((description, n, f.get("note")))

    cb = EpochProgress(Recording(), n_train=8, batch=4, epochs=3)
    cb.set_params({"steps": 2})
    logs = {"loss": 1.0, "accuracy": 0.5, "learning_rate": 1e-3}
    for phase_epochs in ([0, 1], [2]):
        cb.on_train_begin()
        for epoch in phase_epochs:
            cb.on_epoch_begin(epoch)
            cb.on_train_batch_end(0, logs)
            cb.on_epoch_end(epoch, logs)
    slow = [d for d, n, note in updates if note == FIRST_STEP_NOTE]
    assert slow == ["epoch 1/3", "epoch 3/3"]
    assert all(n == 0 for _, n, note in updates if note == FIRST_STEP_NOTE)
