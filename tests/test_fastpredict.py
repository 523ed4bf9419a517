"""The TensorFlow-free twin: a finished run carries model.tflite beside model.keras, and
predict and evaluate answer through it (no TensorFlow import) when it is fresh, else
through Keras with one line saying why."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, predict_in_fresh_process

from leukocli.data.synth import make_dataset

SIZE = (75, 75)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, run folder): one epoch of the compact CNN, trained by leuko."""
    from leukocli.training.loop import train
    from leukocli.training.options import TrainOptions

    root = tmp_path_factory.mktemp("fastpredict")
    make_dataset(root / "data", per_class=3, size=SIZE, seed=5, plant=False)
    opts = TrainOptions(train_csv=str(root / "data"), val_csv=str(root / "data"),
                        img_size=SIZE, batch=4, epochs=1, backbone="compact", weights="none",
                        precision="float32", strategy="default", crop_cell=0)
    result = train(opts, out=root / "runs" / "run", latest=False)
    assert not result.interrupted
    return root / "data", root / "runs" / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _images(data: Path) -> list[Path]:
    return sorted(data.glob("*/*.jpeg"))


def test_a_finished_run_has_a_fresh_twin(trained: tuple[Path, Path]) -> None:
    from leukocli._util.files import file_sha256
    from leukocli.modeling.twin import TWIN_FILE, twin_problem

    _, run = trained
    meta = json.loads((run / "leuko.json").read_text())
    record = meta["twin"]
    assert record["file"] == TWIN_FILE and record["precision"] == "float32"
    assert record["keras_sha256"] == file_sha256(run / "model.keras")
    assert record["sha256"] == file_sha256(run / TWIN_FILE)
    assert twin_problem(run / "model.keras", meta) is None


def test_the_twin_answers_like_keras(trained: tuple[Path, Path]) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle

    data, run = trained
    keras_bundle, twin = load_bundle(run), load_bundle(run, "auto")
    assert keras_bundle.runtime == "keras" and twin.runtime == "litert"
    for tta in (1, 4):
        ref = predict_probs(keras_bundle, _images(data), tta=tta)
        got = predict_probs(twin, _images(data), tta=tta)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_twin_pixels_are_the_loaders(tmp_path: Path) -> None:
    """JPEG decoding and the aspect-keeping resize give the Keras path's pixels exactly."""
    from leukocli.modeling.loader import build_dataset
    from leukocli.modeling.runtimes import load_images

    make_dataset(tmp_path / "d", per_class=1, size=(83, 121), seed=2, plant=False)
    files = [str(p) for p in _images(tmp_path / "d")]
    for size in ((75, 75), (64, 96), (83, 121), (200, 150)):
        ref = np.concatenate([b.numpy() for b in build_dataset(files, None, size, 8)])
        np.testing.assert_allclose(load_images(files, size), ref, atol=1e-3)


def test_predict_through_the_twin_imports_no_tensorflow(trained: tuple[Path, Path]) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle

    data, run = trained
    image = _images(data)[0]
    done = predict_in_fresh_process(str(image), "--model", str(run), "--format", "json")
    assert done.code == 0, done.stderr[-2000:]
    assert not done.tensorflow and not done.keras
    assert done.stderr.strip() == "", done.stderr  # no fallback line, no LiteRT chatter
    shown = json.loads(done.stdout)[0]
    bundle = load_bundle(run)
    assert shown["predicted"] == bundle.classes[int(predict_probs(bundle, [image])[0].argmax())]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_a_stale_twin_falls_back_to_keras_in_one_line(trained: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from leukocli.modeling.bundle import load_bundle

    data, run = trained
    stale = _copy(run, tmp_path)
    model = load_bundle(stale).model
    weights = model.get_weights()
    model.set_weights([*weights[:-1], weights[-1] + 0.5])  # another model.keras
    model.save(tmp_path / "other.keras")
    shutil.copy(tmp_path / "other.keras", stale / "model.keras")
    done = invoke("predict", str(_images(data)[0]), "--model", str(stale), "--format", "csv")
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = _warnings(done.stderr)
    assert "changed since its twin" in line and "using Keras" in line
    assert len(done.stdout.splitlines()) == 2  # the header and the Keras answer
    # the command line can always ask for Keras itself: then nothing to say
    quiet = invoke("predict", str(_images(data)[0]), "--model", str(stale), "--runtime", "keras")
    assert quiet.code == 0 and not _warnings(quiet.stderr), quiet.stderr


@pytest.mark.parametrize("record_it", [False, True])
def test_a_broken_twin_falls_back_in_one_line(trained: tuple[Path, Path], tmp_path: Path,
                                              record_it: bool) -> None:
    from leukocli._util.files import file_sha256

    data, run = trained
    broken = _copy(run, tmp_path)
    (broken / "model.tflite").write_bytes(b"not a flatbuffer at all" * 40)
    if record_it:  # leuko.json even vouches for the damaged file: LiteRT itself refuses it
        meta = json.loads((broken / "leuko.json").read_text())
        meta["twin"]["sha256"] = file_sha256(broken / "model.tflite")
        (broken / "leuko.json").write_text(json.dumps(meta))
    done = invoke("predict", str(data), "--model", str(broken), "--format", "csv")
    assert done.code == 0, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = _warnings(done.stderr)
    assert ("not a loadable LiteRT model" if record_it else "not the twin leuko made") in line
    assert len(done.stdout.splitlines()) == 1 + len(_images(data))


def test_missing_twin_or_runtime_falls_back_and_keras_can_be_forced(
        trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leukocli.modeling import runtimes

    data, run = trained
    image = str(_images(data)[0])
    assert not _warnings(invoke("predict", image, "--model", str(run)).stderr)  # fresh: silent
    gone = _copy(run, tmp_path)
    (gone / "model.tflite").unlink()
    (line,) = _warnings(invoke("predict", image, "--model", str(gone)).stderr)
    assert "twin model.tflite is missing" in line
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if it were not installed
    (line,) = _warnings(invoke("predict", image, "--model", str(run)).stderr)
    assert "needs ai_edge_litert" in line and "using Keras" in line
    monkeypatch.delitem(sys.modules, "ai_edge_litert")

    def refuse(*args: object) -> None:
        raise AssertionError("--runtime keras must not load the twin")

    monkeypatch.setattr(runtimes.LiteRTModel, "__init__", refuse)
    done = invoke("predict", image, "--model", str(run), "--runtime", "keras")
    assert done.code == 0 and not _warnings(done.stderr), done.stderr
    invoke("predict", image, "--model", str(run), "--runtime", "fast").one_line_error(
        2, "--runtime must be one of auto, keras")
    invoke("evaluate", str(data), "--model", str(run), "--runtime", "tf").one_line_error(
        2, "--runtime must be one of auto, keras")


def test_evaluate_through_the_twin_matches_keras(trained: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    data, run = trained
    figures = {}
    for runtime in ("auto", "keras"):
        out = tmp_path / runtime
        done = invoke("evaluate", str(data), "--model", str(run), "--out", str(out),
                      "--runtime", runtime)
        assert done.code == 0 and not _warnings(done.stderr), done.stderr
        figures[runtime] = json.loads((out / "metrics.json").read_text())
    assert figures["auto"]["accuracy"] == figures["keras"]["accuracy"]
    assert figures["auto"]["confusion_matrix"] == figures["keras"]["confusion_matrix"]


def test_a_cv_ensemble_runs_on_its_members_twins(trained: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle, write_ensemble

    data, run = trained
    ens = tmp_path / "cv"
    for k in range(2):
        shutil.copytree(run, ens / f"fold{k}")
    meta = json.loads((run / "leuko.json").read_text())
    write_ensemble(ens, ["fold0", "fold1"], {"classes": meta["classes"],
                                             "img_size": meta["img_size"]})
    twins = load_bundle(ens, "auto")
    assert twins.runtime == "litert"
    np.testing.assert_allclose(predict_probs(twins, _images(data)),
                               predict_probs(load_bundle(ens), _images(data)), atol=1e-4)
    (ens / "fold1" / "model.tflite").unlink()
    from leukocli._util.progress import Collecting

    said = Collecting()
    assert load_bundle(ens, "auto", said).runtime == "keras"
    assert len(said.warnings) == 1 and "member fold1" in said.warnings[0]


def test_the_shipped_classifier_carries_a_fresh_twin() -> None:
    from leukocli.modeling.bundle import load_bundle
    from leukocli.modeling.shipped import shipped_model
    from leukocli.modeling.twin import twin_problem

    wbc = shipped_model("wbc")
    assert wbc is not None
    meta = json.loads((wbc / "leuko.json").read_text())
    assert twin_problem(wbc / "model.keras", meta) is None
    assert load_bundle(Path("wbc"), "auto").runtime == "litert"


def test_saving_a_new_model_drops_the_old_twin(trained: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    """A kept epoch's model.keras makes the twin stale: training forgets it until the end."""
    from leukocli.modeling.bundle import load_bundle, save_bundle

    _, run = trained
    copy = _copy(run, tmp_path)
    meta = json.loads((copy / "leuko.json").read_text())
    assert save_bundle(copy, load_bundle(copy).model, meta, twin=False) is None
    assert "twin" not in json.loads((copy / "leuko.json").read_text())
    assert not (copy / "model.tflite").exists()


def test_a_mixed_precision_run_computes_in_float32_like_its_twin(tmp_path: Path) -> None:
    """A run trained in mixed_bfloat16 answers through Keras as its float32 twin does:
    in bfloat16, `--runtime keras` and the default gave a point apart on real data."""
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle
    from leukocli.training.loop import train
    from leukocli.training.options import TrainOptions

    make_dataset(tmp_path / "data", per_class=3, size=SIZE, seed=6, plant=False)
    opts = TrainOptions(train_csv=str(tmp_path / "data"), val_csv="none", img_size=SIZE,
                        batch=4, epochs=1, backbone="compact", weights="none",
                        precision="mixed_bfloat16", strategy="default", crop_cell=0)
    run = train(opts, out=tmp_path / "run", latest=False).run_dir
    as_saved = load_bundle(run, float32=False)
    assert as_saved.model.get_layer("head_conv").compute_dtype == "bfloat16"
    keras_bundle, twin = load_bundle(run), load_bundle(run, "auto")
    assert keras_bundle.model.get_layer("head_conv").compute_dtype == "float32"
    images = _images(tmp_path / "data")
    np.testing.assert_allclose(predict_probs(keras_bundle, images),
                               predict_probs(twin, images), atol=1e-4)
