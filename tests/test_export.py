"""`leuko export`: SavedModel, ONNX and LiteRT artefacts that answer like the Keras model,
the cell crop included, and ONNX/LiteRT runs of predict and evaluate without TensorFlow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, predict_in_fresh_process

from leukocli.data.synth import make_dataset

FORMATS = {"savedmodel": "m", "onnx": "m.onnx", "litert": "m.tflite"}


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A compact model with the cell-sized crop, saved as a run, and synthetic smears."""
    import keras

    from leukocli.modeling.bundle import save_bundle
    from leukocli.modeling.loader import load_image
    from leukocli.modeling.model import build_model

    root = tmp_path_factory.mktemp("export")
    make_dataset(root / "data", per_class=2, size=(96, 128), seed=9, plant=False)
    keras.utils.set_random_seed(1)
    model = build_model("compact", (96, 128), 4, crop_cell=48, crop_scale=1.9)
    save_bundle(root / "run", model, {"classes": ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE",
                                                  "NEUTROPHIL"], "img_size": [96, 128],
                                      "backbone": "compact"})
    images = np.stack([load_image(str(p), (96, 128)).numpy()
                       for p in sorted((root / "data").glob("*/*.jpeg"))])
    return root, root / "run", images


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_answers_like_the_keras_model(
    crop_run: tuple[Path, Path, np.ndarray], fmt: str
) -> None:
    from leukocli.modeling.bundle import load_bundle

    root, run, images = crop_run
    out = root / fmt / FORMATS[fmt]
    done = invoke("export", str(run), "--format", fmt, "--out", str(out))
    assert done.code == 0, done.stderr
    card = json.loads((out / "leuko.json" if out.is_dir() else
                       out.with_name(out.name + ".leuko.json")).read_text())
    assert card["classes"][0] == "EOSINOPHIL" and card["img_size"] == [96, 128]
    keras_probs = np.asarray(load_bundle(run).model.predict_on_batch(images))
    exported = load_bundle(out)
    assert exported.runtime == fmt and exported.classes == card["classes"]
    probs = exported.model.predict_on_batch(images)
    np.testing.assert_allclose(probs, keras_probs, atol=1e-4)
    assert (probs.argmax(1) == keras_probs.argmax(1)).all()


@pytest.mark.parametrize(("fmt", "quantize"), [("onnx", "float16"), ("onnx", "dynamic-int8"),
                                              ("litert", "float16"), ("litert", "dynamic-int8")])
def test_quantized_exports_agree_on_classes(tiny_run: tuple[Path, Path], tmp_path: Path,
                                            fmt: str, quantize: str) -> None:
    from leukocli.evaluation.predict import predict_probs
    from leukocli.modeling.bundle import load_bundle

    data, run = tiny_run
    out = tmp_path / ("q.onnx" if fmt == "onnx" else "q.tflite")
    done = invoke("export", str(run), "--format", fmt, "--quantize", quantize, "--out", str(out))
    assert done.code == 0, done.stderr
    assert "Saved artifact" not in done.stdout  # the converter's listing stays off the terminal
    images = sorted(data.glob("*/*.jpeg"))
    ref = predict_probs(load_bundle(run), images).argmax(1)
    got = predict_probs(load_bundle(out), images).argmax(1)
    assert (ref == got).mean() >= 0.99
    assert out.stat().st_size < 0.6 * (run / "model.keras").stat().st_size


def test_predict_with_onnx_never_imports_tensorflow(crop_run: tuple[Path, Path, np.ndarray],
                                                    tmp_path: Path) -> None:
    root, run, _ = crop_run
    out = tmp_path / "m.onnx"
    assert invoke("export", str(run), "--out", str(out)).code == 0
    image = sorted((root / "data").glob("*/*.jpeg"))[0]
    done = predict_in_fresh_process(str(image), "--model", str(out), "--format", "json",
                                    "--tta", "4")
    assert done.code == 0, done.stderr[-2000:]
    assert not done.tensorflow and not done.keras
    predicted = json.loads(done.stdout)[0]
    assert predicted["predicted"] in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def test_predict_explain_writes_one_heatmap_per_classified_image(
    crop_run: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    root, run, _ = crop_run
    done = invoke("predict", str(root / "data"), "--model", str(run), "--explain",
                  str(tmp_path / "maps"), "--format", "csv")
    assert done.code == 0, done.stderr
    shown = {Path(r.split(",")[0]).stem for r in done.stdout.splitlines()[1:]}
    maps = {p.stem.split("-", 1)[1].removesuffix("-gradcam")
            for p in (tmp_path / "maps").glob("*-gradcam.png")}
    assert len(shown) >= 8 and maps == shown
    written = list((tmp_path / "maps").glob("*-gradcam.png"))
    assert len(written) == len(done.stdout.splitlines()) - 1  # one per row, none overwritten


def test_numpy_views_match_tensorflow_views() -> None:
    """TTA without TensorFlow sees the same flips, turns and shifts."""
    from leukocli.modeling.augment import tta_views
    from leukocli.modeling.runtimes import tta_views_np

    x = np.random.default_rng(3).uniform(0, 255, (2, 30, 40, 3)).astype(np.float32)
    for a, b in zip(tta_views_np(x, 20), tta_views(x, 20), strict=True):
        inner = (slice(None), slice(2, -2), slice(2, -2))  # edges: TF reads one fill pixel
        np.testing.assert_allclose(a[inner], np.asarray(b)[inner], atol=0.05)


def test_evaluate_runs_a_tflite_and_missing_runtimes_are_one_line(
    tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run = tiny_run
    out = tmp_path / "m.tflite"
    assert invoke("export", str(run), "--format", "litert", "--out", str(out)).code == 0
    done = invoke("evaluate", str(data), "--model", str(out), "--out", str(tmp_path / "ev"))
    assert done.code == 0, done.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n"] == 32
    invoke("predict", str(data), "--model", str(out), "--explain", str(tmp_path / "maps")
           ).one_line_error(2, "Grad-CAM needs the Keras model")  # before any prediction
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if the extra were missing
    invoke("predict", str(data), "--model", str(out)).one_line_error(
        2, "needs ai_edge_litert", "pip install 'leukocli[litert]'")
    invoke("export", str(run), "--format", "savedmodel", "--quantize", "float16"
           ).one_line_error(2, "--quantize applies to onnx and litert")
    invoke("export", str(run), "--format", "litert", "--out", str(out)).one_line_error(
        2, "exists; leuko does not replace it")
    invoke("export", str(run), "--out", str(out)).one_line_error(2, "onnx artefacts end in .onnx")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the export extra were missing
    invoke("export", str(run), "--out", str(tmp_path / "m.onnx")).one_line_error(
        2, "needs tf2onnx and onnx", "pip install 'leukocli[export]'")
