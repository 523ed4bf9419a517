"""A run's TensorFlow-free twin: `model.tflite` (float32 LiteRT) beside `model.keras`.

Importing TensorFlow costs a fresh `leuko predict cell.jpg` about 5 s; the LiteRT
interpreter answers the same in well under one. So a finished run (and the shipped
classifier) carries its model a second time in LiteRT form, and predict, evaluate and
count use it. leuko.json records the twin with the sha256 of the model.keras it was made
from and of itself: a twin that no longer matches (model.keras replaced, the file
damaged) is never used, and Keras answers instead, with the reason in one line.
No TensorFlow here except inside `write_twin`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util.files import atomic_write_json, file_sha256, read_json_object
from ..errors import LeukoError, ParameterError, opt
from .bundle import META_FILE, MODEL_FILE, Bundle

if TYPE_CHECKING:
    from .._tf import keras

TWIN_FILE = "model.tflite"
TWIN_KEY = "twin"  # leuko.json: the twin's record
RUNTIMES = ("auto", "keras")


def check_runtime(runtime: str) -> str:
    """The one check of `runtime`: auto (the twin when it is fresh) or keras."""
    value = (runtime or "").strip().lower()
    if value not in RUNTIMES:
        raise ParameterError("runtime", f"{opt('runtime')} must be one of {', '.join(RUNTIMES)} "
                                        f"(got {runtime!r})")
    return value


def write_twin(run_dir: Path, model: keras.Model | None = None) -> dict[str, Any]:
    """Write run_dir/model.tflite from the run's model.keras; returns its leuko.json record.

    `model` must be what model.keras holds (None: loaded from it). Raises LeukoError when
    the converter fails; the run keeps its Keras model either way.
    """
    from .bundle import _load_model
    from .export import write_litert

    run_dir = Path(run_dir)
    source = run_dir / MODEL_FILE
    t0 = time.perf_counter()
    write_litert(model if model is not None else _load_model(source), run_dir / TWIN_FILE)
    return {"file": TWIN_FILE, "format": "litert", "precision": "float32",
            "keras_sha256": file_sha256(source), "sha256": file_sha256(run_dir / TWIN_FILE),
            "seconds": round(time.perf_counter() - t0, 2)}


def add_twin(run_dir: Path) -> dict[str, Any]:
    """Give an existing run folder (one trained before twins, say) its twin; the record."""
    run_dir = Path(run_dir)
    meta = read_json_object(run_dir / META_FILE, "run metadata")
    if not (run_dir / MODEL_FILE).is_file():
        raise LeukoError(f"{run_dir} holds no {MODEL_FILE} to make a twin of")
    record = write_twin(run_dir)
    atomic_write_json(run_dir / META_FILE, {**meta, TWIN_KEY: record})
    return record


def drop_twin(run_dir: Path, meta: dict[str, Any]) -> None:
    """Forget the twin a new model.keras makes stale (the file too, when leuko.json says
    it is leuko's)."""
    record = meta.pop(TWIN_KEY, None)
    if isinstance(record, dict) and record.get("file") == TWIN_FILE:
        (Path(run_dir) / TWIN_FILE).unlink(missing_ok=True)


def twin_problem(model_path: Path, meta: dict[str, Any]) -> str | None:
    """Why the twin beside `model_path` cannot stand in for it, or None when it can."""
    record = meta.get(TWIN_KEY)
    where = model_path.parent
    if not isinstance(record, dict) or record.get("file") != TWIN_FILE:
        return (f"{where} has no TensorFlow-free twin ({TWIN_FILE}; a run gets one when "
                "training finishes)")
    twin = where / TWIN_FILE
    if not twin.is_file():
        return f"{where}'s twin {TWIN_FILE} is missing"
    if file_sha256(model_path) != record.get("keras_sha256"):
        return f"{model_path} changed since its twin {TWIN_FILE} was made (the twin is stale)"
    if file_sha256(twin) != record.get("sha256"):
        return f"{twin} is not the twin leuko made (its sha256 differs)"
    return None


def twin_bundle(model_path: Path, meta: dict[str, Any], run_dir: Path | None
                ) -> Bundle | str:
    """The run as its LiteRT twin, or the one-line reason it must be Keras."""
    from .runtimes import LiteRTModel

    problem = twin_problem(model_path, meta)
    if problem is not None:
        return problem
    h, w = (int(v) for v in meta["img_size"])
    classes = [str(c) for c in meta["classes"]]
    try:
        model = LiteRTModel(model_path.parent / TWIN_FILE, (h, w), len(classes))
    except LeukoError as exc:
        return str(exc)
    return Bundle(model, classes, (h, w), meta, run_dir, "litert")


class MeanOfTwins:
    """A cv ensemble without TensorFlow: its members' twins, softmax outputs averaged."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        outs = [np.asarray(m.predict_on_batch(x), np.float32) for m in self.members]
        return np.asarray(np.mean(outs, axis=0), np.float32)


def ensemble_twin(run_dir: Path, members: list[Path], meta: dict[str, Any]) -> Bundle | str:
    """A cv ensemble as its members' twins, or the reason it must be Keras."""
    classes = [str(c) for c in meta["classes"]]
    size = (int(meta["img_size"][0]), int(meta["img_size"][1]))
    models = []
    for member in members:
        part = twin_bundle(member / MODEL_FILE,
                           read_json_object(member / META_FILE, "run metadata"), member)
        if isinstance(part, str):
            return f"ensemble member {member.name}: {part}"
        if part.classes != classes or part.img_size != size:
            return f"ensemble member {member} has other classes or image size than {run_dir}"
        models.append(part.model)
    return Bundle(MeanOfTwins(models), classes, size, meta, run_dir, "litert")
