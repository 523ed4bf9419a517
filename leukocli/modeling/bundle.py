"""The saved run: `model.keras` plus `leuko.json` metadata, and the `runs/latest` pointer.

Evaluate and predict take classes, image size and preprocessing from here, never from
flags, so a model cannot silently be fed the wrong input or read with the wrong labels.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LeukoError

if TYPE_CHECKING:  # keras (and TensorFlow) load only when a model is really needed
    from ._tf import keras

MODEL_FILE = "model.keras"
META_FILE = "leuko.json"
LATEST = "latest"

_HOW_TO_GET_ONE = (
    "train one with `leuko train` (or try `leuko demo`), or point --model at a run "
    "directory or a .keras file"
)


@dataclass
class Bundle:
    """A loaded model with what is needed to use it.

    `model` takes raw 0-255 float32 RGB batches of shape (None, h, w, 3) and returns
    softmax probabilities over `classes` (in that order).
    """

    model: keras.Model
    classes: list[str]
    img_size: tuple[int, int]
    meta: dict[str, Any]
    run_dir: Path | None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def save_bundle(run_dir: Path, model: keras.Model, meta: dict[str, Any]) -> None:
    """Write run_dir/model.keras and run_dir/leuko.json (both replaced atomically)."""
    from ._tf import keras

    run_dir = Path(run_dir)
    if "classes" not in meta or not list(meta["classes"]):
        raise ValueError("bundle metadata needs a non-empty 'classes' list")
    if "img_size" not in meta or len(meta["img_size"]) != 2:
        raise ValueError("bundle metadata needs 'img_size' as [height, width]")
    run_dir.mkdir(parents=True, exist_ok=True)
    full = dict(meta)
    full["classes"] = [str(c) for c in meta["classes"]]
    full["img_size"] = [int(meta["img_size"][0]), int(meta["img_size"][1])]
    full.setdefault("backbone", None)
    full.setdefault("preprocessing", "inside the model: input is raw 0-255 float32 RGB")
    full.setdefault("keras_version", keras.__version__)

    # Save under a temporary name first: an interrupted save never leaves a half model.
    tmp_model = run_dir / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp_model)
    os.replace(tmp_model, run_dir / MODEL_FILE)
    _write_text_atomic(run_dir / META_FILE, json.dumps(full, indent=2, default=str) + "\n")


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def point_latest(run_dir: Path) -> None:
    """Atomically point `<runs>/latest` (beside run_dir) at run_dir with a relative symlink.

    Where symlinks are not allowed (some Windows setups), `latest` becomes a text file
    holding the run directory's name; `resolve_run_dir` understands both.
    """
    run_dir = Path(run_dir)
    latest = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):
        if latest.is_dir() and not latest.is_symlink():
            raise LeukoError(
                f"{latest} is a real directory; cannot point it at {run_dir}"
            ) from None
        _write_text_atomic(latest, run_dir.name + "\n")
        return
    if latest.is_dir() and not latest.is_symlink():
        tmp.unlink()
        raise LeukoError(f"{latest} is a real directory; cannot point it at {run_dir}")
    os.replace(tmp, latest)


def resolve_run_dir(path: Path) -> Path:
    """Follow `runs/latest` (symlink or pointer file) to the run directory it names.

    Returns the path unchanged when it is already a run directory or a .keras file.
    Raises LeukoError when nothing is there.
    """
    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise LeukoError(
            f"{p} points at {os.readlink(p)}, which no longer exists; {_HOW_TO_GET_ONE}"
        )
    if p.is_file() and p.name == LATEST:
        name = p.read_text(encoding="utf-8", errors="replace").strip()
        target = Path(name) if Path(name).is_absolute() else p.parent / name
        if not name or not target.exists():
            raise LeukoError(f"{p} names run {name!r}, which does not exist; {_HOW_TO_GET_ONE}")
        return target.resolve()
    if not p.exists():
        if p.name == LATEST:
            raise LeukoError(f"no trained model at {p}: {_HOW_TO_GET_ONE}")
        raise LeukoError(f"model {p} not found: {_HOW_TO_GET_ONE}")
    return p.resolve()


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{meta_path} is not readable run metadata ({exc})".splitlines()[0]
        raise LeukoError(msg) from None
    if not isinstance(meta, dict):
        raise LeukoError(f"{meta_path} is not readable run metadata (expected a JSON object)")
    return meta


def _load_model(model_path: Path, trusted: bool) -> keras.Model:
    # Custom layers registered by leukocli.model must be importable before deserialising.
    import importlib

    from ._tf import keras

    try:
        importlib.import_module("leukocli.model")
    except Exception:  # noqa: BLE001 - a missing or broken optional module must not block loading
        pass
    if not zipfile.is_zipfile(model_path):
        raise LeukoError(f"{model_path} is not a Keras model file (a .keras file is a zip archive)")
    try:
        return keras.models.load_model(model_path, compile=False)
    except ValueError as exc:
        # Lambda layers need safe_mode=False; allow it only for leuko's own runs.
        if trusted and "safe_mode" in str(exc):
            try:
                return keras.models.load_model(model_path, compile=False, safe_mode=False)
            except Exception as exc2:  # noqa: BLE001
                exc = exc2  # type: ignore[assignment]
        raise LeukoError(
            f"{model_path} is not a loadable Keras model ({_first_line(exc)})"
        ) from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, KeyError...: a file that is no model
        raise LeukoError(
            f"{model_path} is not a loadable Keras model ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def locate(path: Path) -> tuple[Path, Path, Path | None]:
    """(model file, metadata file, run directory or None) for a --model argument."""
    p = resolve_run_dir(Path(path))
    if p.is_dir():
        model_path = p / MODEL_FILE
        if not model_path.exists():
            candidates = sorted(p.glob("*.keras"))
            if len(candidates) != 1:
                raise LeukoError(f"{p} holds no {MODEL_FILE}: {_HOW_TO_GET_ONE}")
            model_path = candidates[0]
        return model_path, p / META_FILE, p
    if p.suffix.lower() != ".keras":
        raise LeukoError(f"{p} is not a model: expected a run directory or a .keras file")
    meta_path = p.parent / META_FILE
    return p, meta_path, (p.parent if meta_path.exists() else None)


def read_meta(path: Path) -> dict[str, Any]:
    """The run metadata for a --model argument without loading the model (cheap: no TF).

    Empty when a bare .keras file has no leuko.json beside it.
    """
    _, meta_path, _ = locate(path)
    return _read_meta(meta_path) if meta_path.exists() else {}


def load_bundle(path: Path) -> Bundle:
    """Load a run directory, `runs/latest`, or a .keras file (with leuko.json beside it).

    A bare .keras without metadata still loads: the image size comes from the model's
    input shape and classes are named class_0..class_{n-1}.
    """
    model_path, meta_path, run_dir = locate(path)
    meta = _read_meta(meta_path) if meta_path.exists() else {}
    model = _load_model(model_path, trusted=bool(meta))

    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    out_shape = model.output_shape
    if isinstance(out_shape, list):
        out_shape = out_shape[0]
    n_out = int(out_shape[-1]) if out_shape and out_shape[-1] else None

    if "img_size" in meta:
        h, w = (int(v) for v in meta["img_size"])
    elif shape is not None and len(shape) == 4 and shape[1] and shape[2]:
        h, w = int(shape[1]), int(shape[2])
    else:
        raise LeukoError(
            f"{model_path}: image size unknown (no {META_FILE} beside it and the model "
            "input has no fixed size)"
        )
    if "classes" in meta:
        classes = [str(c) for c in meta["classes"]]
    elif n_out:
        classes = [f"class_{i}" for i in range(n_out)]
    else:
        raise LeukoError(f"{model_path}: class names unknown (no {META_FILE} beside it)")
    if n_out is not None and n_out != len(classes):
        raise LeukoError(
            f"{model_path} outputs {n_out} classes but {meta_path.name} lists {len(classes)}"
        )
    meta.setdefault("classes", classes)
    meta.setdefault("img_size", [h, w])
    return Bundle(model=model, classes=classes, img_size=(h, w), meta=meta, run_dir=run_dir)
