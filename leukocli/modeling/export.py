"""Exporting a run as standard inference artefacts: SavedModel, ONNX and LiteRT.

Through Keras 3's own `model.export` (TensorFlow backend). The model is first rebuilt in
float32 (a run trained in mixed precision computes in bfloat16; the formats want one
float type), with the same weights. Beside every artefact goes a small JSON card
(classes, input size, how to feed it, where it came from) so a consumer needs nothing
else; ONNX files carry the same facts in their metadata too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .._tf import keras, tf
from .._util.files import atomic_write_json, ensure_writable_dir
from ..errors import LeukoError, ParameterError, first_line, opt
from .bundle import Bundle, load_bundle
from .runtimes import require_extra

FORMATS = {"savedmodel": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "litert": ".tflite"}
QUANTIZE = ("none", "float16", "dynamic-int8")
CARD_SUFFIX = ".leuko.json"


def check_export_options(fmt: str, quantize: str) -> tuple[str, str]:
    """The one check of an export's format and quantization."""
    f = (fmt or "").strip().lower()
    q = (quantize or "none").strip().lower()
    if f not in FORMATS:
        raise ParameterError("format", f"{opt('format')} must be one of {', '.join(FORMATS)} "
                                       f"(got {fmt!r})")
    if q not in QUANTIZE:
        raise ParameterError("quantize", f"{opt('quantize')} must be one of "
                                         f"{', '.join(QUANTIZE)} (got {quantize!r})")
    if f == "savedmodel" and q != "none":
        raise ParameterError("quantize", f"{opt('quantize')} applies to onnx and litert; a "
                                         "SavedModel stays float32")
    return f, q


def card_path(artefact: Path) -> Path:
    """Where an artefact's card lives: inside a SavedModel folder, else beside the file."""
    return artefact / "leuko.json" if artefact.is_dir() else artefact.with_name(
        artefact.name + CARD_SUFFIX)


def float32_model(model: keras.Model) -> keras.Model:
    """The same model and weights, computing in float32 whatever policy it was trained in."""
    config = model.to_json()
    for policy in ("mixed_bfloat16", "mixed_float16"):
        config = config.replace(f'"{policy}"', '"float32"')
    clone = keras.models.model_from_json(config)
    clone.set_weights(model.get_weights())
    shape = [1 if d is None else int(d) for d in clone.input_shape]
    clone(tf.zeros(shape), training=False)  # the ONNX exporter wants a model that has run
    return clone


def computing_float32(model: keras.Model) -> keras.Model:
    """`model` itself if it computes in float32, else its float32 clone."""
    return float32_model(model) if '"mixed_' in model.to_json() else model


def default_out(bundle: Bundle, model_arg: Path, fmt: str, quantize: str) -> Path:
    from .shipped import is_shipped

    name = "model" + ("" if quantize == "none" else f"-{quantize}")
    if bundle.run_dir is not None and is_shipped(bundle.run_dir):
        # never into the installed package: here, in a folder that cannot be mistaken
        # for the shipped name itself (--model wbc would then find this folder)
        return Path(f"{bundle.run_dir.name}-export") / f"{name}{SUFFIX[fmt]}"
    base = bundle.run_dir if bundle.run_dir is not None else model_arg.parent
    return base / "export" / f"{name}{SUFFIX[fmt]}"


def export_run(model_arg: Path, fmt: str, quantize: str = "none",
               out: Path | None = None) -> dict[str, Any]:
    """Export a run (or cv ensemble) and write its card; returns the card."""
    fmt, quantize = check_export_options(fmt, quantize)
    bundle = load_bundle(model_arg)
    target = Path(out) if out is not None else default_out(bundle, Path(model_arg), fmt,
                                                            quantize)
    if fmt == "savedmodel" and target.suffix:
        raise ParameterError("out", f"{opt('out', target)}: a SavedModel is a folder; give a "
                                    "folder name")
    if fmt != "savedmodel" and target.suffix.lower() != SUFFIX[fmt]:
        raise ParameterError("out", f"{opt('out', target)}: {fmt} artefacts end in {SUFFIX[fmt]}")
    if target.exists():
        raise ParameterError("out", f"{target} exists; leuko does not replace it (choose another "
                                    f"{opt('out')})")
    if fmt == "onnx":  # an optional extra: say what to install before any work
        require_extra(["tf2onnx", "onnx"], "leukocli[export]", opt("format", "onnx"))
    ensure_writable_dir(target.parent)
    model = float32_model(bundle.model)
    card = {
        "format": fmt, "quantize": quantize, "classes": list(bundle.classes),
        "img_size": list(bundle.img_size),
        "input": "float32 RGB 0-255, shape (batch, height, width, 3); the model crops, "
                 "scales and normalises itself",
        "output": "softmax probabilities over classes, in this order",
        "backbone": bundle.meta.get("backbone"), "source": str(bundle.run_dir or model_arg),
        "keras_version": keras.__version__, "tensorflow_version": tf.__version__,
    }
    _export(model, fmt, quantize, target, card)
    atomic_write_json(card_path(target), card)
    return {**card, "path": str(target)}


def write_litert(model: keras.Model, target: Path) -> None:
    """`model` as a float32 LiteRT file at `target` (replaced whole): a run's
    TensorFlow-free twin (modeling.twin), made by the same exporter as `leuko export`.
    Float32 even while a mixed-precision run sets the global policy (training's end)."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        _export(float32_model(model), "litert", "none", Path(target), {})
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _export(model: keras.Model, fmt: str, quantize: str, target: Path,
            card: dict[str, Any]) -> None:
    """Write the artefact through a temporary name, so a failure leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".leuko-export-") as tmp:
        staged = Path(tmp) / ("model" + SUFFIX[fmt])
        try:
            if fmt == "litert" and quantize != "none":
                _export_litert_quantized(model, staged, quantize)
            else:
                with warnings.catch_warnings():  # tf2onnx's own numpy deprecation notes
                    warnings.simplefilter("ignore", FutureWarning)
                    model.export(str(staged), format=FORMATS[fmt], verbose=False)
            if fmt == "onnx":
                _onnx_finish(staged, quantize, card)
        except LeukoError:
            raise
        except Exception as exc:  # noqa: BLE001 - converters raise anything; one line out
            raise LeukoError(f"could not export to {fmt}: {first_line(exc)}") from None
        shutil.move(str(staged), str(target))


def _export_litert_quantized(model: keras.Model, staged: Path, quantize: str) -> None:
    import contextlib
    import io

    # from_keras_model saves a temporary SavedModel and prints its endpoint listing
    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        staged.write_bytes(converter.convert())


def _onnx_finish(staged: Path, quantize: str, card: dict[str, Any]) -> None:
    """Quantize (onnxruntime's dynamic int8, or float16 weights) and embed the card."""
    import onnx

    if quantize == "dynamic-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = staged.with_name("q.onnx")
        quantize_dynamic(str(staged), str(quantized), weight_type=QuantType.QInt8)
        quantized.replace(staged)
    proto = onnx.load(str(staged))
    if quantize == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(proto, keep_io_types=True)
    del proto.metadata_props[:]
    for key in ("classes", "img_size", "input", "output"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"leuko.{key}", json.dumps(card[key])
    onnx.save(proto, str(staged))
