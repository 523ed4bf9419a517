"""The saved run: `model.keras` plus `leuko.json` metadata, and the `runs/latest` pointer.

Evaluate and predict take classes, image size and preprocessing from here, never from
flags, so a model cannot silently be fed the wrong input or read with the wrong labels.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.files import atomic_write, atomic_write_json, os_error_message, read_json_object
from .._util.progress import SILENT, Reporter
from ..errors import LeukoError, cli_only, cmd, first_line, opt

if TYPE_CHECKING:  # keras (and TensorFlow) load only when a model is really needed
    from .._tf import keras

MODEL_FILE = "model.keras"
META_FILE = "leuko.json"
LATEST = "latest"
ENSEMBLE_KEY = "members"  # leuko.json of an ensemble lists its member run folders

_TRY_DEMO = cli_only(f" (or try `{cmd('demo')}`)")  # no library call makes a demo
_HOW_TO_GET_ONE = (
    f"train one with `{cmd('train')}`{_TRY_DEMO}, or point {opt('model')} at a run "
    "directory or a .keras file"
)


@dataclass
class Bundle:
    """A loaded model with what is needed to use it.

    `model` takes raw 0-255 float32 RGB batches of shape (None, h, w, 3) and returns
    softmax probabilities over `classes` (in that order).
    """

    model: keras.Model  # or, for exported artefacts, an object with predict_on_batch
    classes: list[str]
    img_size: tuple[int, int]
    meta: dict[str, Any]
    run_dir: Path | None
    runtime: str = "keras"  # or "onnx", "litert", "savedmodel" (leuko export's artefacts)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def save_bundle(run_dir: Path, model: keras.Model, meta: dict[str, Any],
                twin: bool = True) -> str | None:
    """Write run_dir/model.keras, its TensorFlow-free twin model.tflite (modeling.twin;
    training asks for it once, at the end) and leuko.json, each replaced atomically.
    Returns why the twin could not be made, or None. A failed save (a full disk, say)
    leaves the earlier model.keras in place and raises one line saying what to free."""
    run_dir = Path(run_dir)
    if "classes" not in meta or not list(meta["classes"]):
        raise ValueError("bundle metadata needs a non-empty 'classes' list")
    if "img_size" not in meta or len(meta["img_size"]) != 2:
        raise ValueError("bundle metadata needs 'img_size' as [height, width]")
    from .._tf import keras

    full = dict(meta)
    full["classes"] = [str(c) for c in meta["classes"]]
    full["img_size"] = [int(meta["img_size"][0]), int(meta["img_size"][1])]
    full.setdefault("backbone", None)
    full.setdefault("preprocessing", "inside the model: input is raw 0-255 float32 RGB")
    full.setdefault("keras_version", keras.__version__)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeukoError(os_error_message(exc, run_dir, "create")) from None
    atomic_write(run_dir / MODEL_FILE, lambda tmp: _save_keras(model, tmp))
    from .twin import TWIN_KEY, drop_twin, write_twin

    drop_twin(run_dir, full)
    try:
        if twin:
            full[TWIN_KEY] = write_twin(run_dir, model)
    except LeukoError as exc:
        return str(exc)
    finally:
        atomic_write_json(run_dir / META_FILE, full)
    return None


def _save_keras(model: keras.Model, tmp: Path) -> None:
    # Keras insists on the .keras suffix; save beside the temporary name, then move.
    target = tmp.with_name(tmp.name + ".keras")
    try:
        model.save(target)
        os.replace(target, tmp)
    finally:
        target.unlink(missing_ok=True)


LATEST_RECORD = ".leuko-latest"  # beside `latest`: the link text leuko last gave it


def _recorded_links(latest: Path) -> list[str]:
    """The link texts leuko gave `latest`: the newest, then the one before it."""
    try:
        text = (latest.parent / LATEST_RECORD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in text.splitlines() if line][:2]


def _names_sibling_run(latest: Path, name: str) -> bool:
    return bool(name) and "/" not in name and (latest.parent / name / META_FILE).exists()


def is_leuko_pointer(latest: Path) -> bool:
    """True when `latest` is leuko's own: a link saying what leuko recorded beside it (or,
    made by older versions, naming a sibling run), or a one-line file naming one; a
    user's own `ln -s /somewhere latest` is neither, and is never moved."""
    if latest.is_symlink():
        text = os.readlink(latest)
        recorded = _recorded_links(latest)
        return text in recorded if recorded else _names_sibling_run(latest, text)
    if not latest.is_file():
        return False
    try:
        if latest.stat().st_size > 4096:
            return False
        name = latest.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return _names_sibling_run(latest, name)


def point_latest(run_dir: Path) -> str | None:
    """Point `<runs>/latest` (beside run_dir) at run_dir; call only once a model is saved.

    A relative symlink where symlinks work, else a one-line file naming the run. Returns
    None when done, or why `latest` was left alone: leuko never replaces a file or
    folder it did not create.
    """
    run_dir = Path(run_dir)
    latest = run_dir.parent / LATEST
    if (latest.exists() or latest.is_symlink()) and not is_leuko_pointer(latest):
        kind = "link" if latest.is_symlink() else "folder" if latest.is_dir() else "file"
        return (
            f"{latest} is a {kind} leuko did not create; left it alone "
            f"(not pointed at {run_dir.name})"
        )
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(run_dir.name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):
        atomic_write(latest, lambda t: t.write_text(run_dir.name + "\n", encoding="utf-8"))
        return None
    try:
        before = os.readlink(latest) if latest.is_symlink() else ""
        atomic_write(run_dir.parent / LATEST_RECORD,
                     lambda t: t.write_text(f"{run_dir.name}\n{before}\n", encoding="utf-8"))
        os.replace(tmp, latest)
    except (OSError, LeukoError) as exc:
        tmp.unlink(missing_ok=True)
        return f"could not point {latest} at {run_dir.name} ({exc})"
    return None


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
    if not p.exists() and len(p.parts) == 1:
        from .shipped import shipped_model

        shipped = shipped_model(str(p))
        if shipped is not None:  # a shipped classifier's name (--model wbc)
            return shipped
    if not p.exists():
        if p.name == LATEST:
            raise LeukoError(f"no trained model at {p}: {_HOW_TO_GET_ONE}")
        raise LeukoError(f"model {p} not found: {_HOW_TO_GET_ONE}")
    return p.resolve()


def _load_model(model_path: Path) -> keras.Model:
    """Deserialise a .keras file in Keras's safe mode, always.

    A run folder is what people pass around, and anyone can write a leuko.json beside a
    model, so nothing in or beside the file decides whether its code may run: safe mode
    refuses Lambda layers and any other serialised Python (leuko builds none), and
    classes outside Keras and leuko's registered layers are unknown to it.
    """
    import importlib

    from .._tf import keras

    importlib.import_module("leukocli.modeling.layers")  # leuko's registered layers
    if not zipfile.is_zipfile(model_path):
        raise LeukoError(f"{model_path} is not a Keras model file (a .keras file is a zip archive)")
    try:
        return keras.models.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, KeyError, TypeError...
        reason = ("it holds Python code (a Lambda layer or similar), which leuko never runs"
                  if "safe_mode" in str(exc) else first_line(exc))
        raise LeukoError(f"{model_path} is not a loadable leuko model ({reason})") from None


def check_leuko_model(model: keras.Model, classes: list[str], img_size: tuple[int, int],
                      where: Path) -> None:
    """Refuse a Keras model that is not what leuko builds, once, when it is loaded.

    Every command then relies on the same facts: the input is (None, h, w, 3) at the
    run's image size, the output is a float32 softmax `probs` over the run's classes, and
    a nested `backbone` model sits inside (Grad-CAM and --weights RUN read it). A model of
    another shape beside a copied leuko.json is refused in one line instead of answering
    with confident nonsense or a traceback further on.
    """
    from .._tf import keras

    h, w = img_size
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or tuple(shape[1:]) != (h, w, 3):
        raise LeukoError(f"{where} is not a leuko model of this run: it takes input "
                         f"{_shape_text(model.input_shape)}, and its {META_FILE} says "
                         f"{h}x{w} RGB images")
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2 or out[-1] != len(classes):
        raise LeukoError(f"{where} outputs {_shape_text(out)}, but its {META_FILE} lists "
                         f"{len(classes)} classes")
    last = model.layers[-1] if model.layers else None
    backbone = next((layer for layer in model.layers if layer.name == "backbone"), None)
    if (last is None or last.name != "probs" or getattr(last, "activation", None)
            is not keras.activations.softmax or not isinstance(backbone, keras.Model)):
        raise LeukoError(f"{where} is not a model leuko built (no `backbone` and softmax "
                         "`probs` layers); leuko uses only models it trained itself")


def _shape_text(shape: object) -> str:
    if isinstance(shape, tuple | list) and all(isinstance(v, int | None) for v in shape):
        return "x".join("?" if v is None else str(v) for v in shape[1:]) or "()"
    return str(shape)


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
        raise LeukoError(f"{p} is not a model: expected a run directory, a .keras file or an "
                         "exported .onnx/.tflite/SavedModel")
    meta_path = p.parent / META_FILE
    return p, meta_path, (p.parent if meta_path.exists() else None)


def read_meta(path: Path) -> dict[str, Any]:
    """The run metadata for a --model argument without loading the model (cheap: no TF)."""
    from .runtimes import exported_kind, read_card

    p = resolve_run_dir(Path(path))
    if exported_kind(p):
        return read_card(p)
    members = ensemble_members(p)
    if members is not None:
        return read_json_object(p / META_FILE, "ensemble metadata")
    model_path, meta_path, _ = locate(p)
    return read_run_meta(meta_path, model_path)


def ensemble_members(p: Path) -> list[Path] | None:
    """The member run folders when `p` is an ensemble run (leuko cv), else None."""
    meta_path = p / META_FILE
    if not (p.is_dir() and meta_path.is_file()) or (p / MODEL_FILE).exists():
        return None
    meta = read_json_object(meta_path, "run metadata")
    if ENSEMBLE_KEY not in meta:
        return None
    members = [p / str(m) for m in meta[ENSEMBLE_KEY]]
    missing = [m.name for m in members if not (m / MODEL_FILE).exists()]
    if missing or not members:
        raise LeukoError(
            f"{p} is an ensemble whose member(s) {', '.join(missing) or '(none listed)'} "
            f"hold no model; finish them ({cmd('cross_validate', fold='N', out='RUN')}) and "
            "collect again"
        )
    return members


def write_ensemble(run_dir: Path, members: list[str], meta: dict[str, Any]) -> None:
    """leuko.json of an ensemble run: the member folders (relative), classes and size."""
    atomic_write_json(run_dir / META_FILE, {**meta, ENSEMBLE_KEY: list(members)})


def _load_ensemble(run_dir: Path, members: list[Path], auto: bool = False,
                   reporter: Reporter = SILENT) -> Bundle:
    """One model averaging the members' softmax: their twins if `auto` and fresh, else Keras."""
    meta = read_json_object(run_dir / META_FILE, "ensemble metadata")
    if auto:
        from .twin import ensemble_twin

        twin = ensemble_twin(run_dir, members, meta)
        if isinstance(twin, Bundle):
            return twin
        reporter.warn(f"{twin}; using Keras")
    from .._tf import keras

    parts = [load_bundle(m) for m in members]
    classes, size = [str(c) for c in meta["classes"]], tuple(int(v) for v in meta["img_size"])
    for m, b in zip(members, parts, strict=True):
        if b.classes != classes or b.img_size != size:
            raise LeukoError(f"ensemble member {m} has other classes or image size than {run_dir}")
    inputs = keras.Input((size[0], size[1], 3), name="image", dtype="float32")
    outputs = []
    for i, b in enumerate(parts):
        b.model.name = f"member_{i}"
        outputs.append(b.model(inputs))
    mean = keras.layers.Average(name="ensemble_mean", dtype="float32")(outputs)
    model = keras.Model(inputs, mean, name="leuko_ensemble")
    return Bundle(model=model, classes=classes, img_size=(size[0], size[1]), meta=meta,
                  run_dir=run_dir)


def read_run_meta(meta_path: Path, model_path: Path) -> dict[str, Any]:
    """The run metadata a model needs (classes, image size), or one line naming what lacks.

    A Keras file without leuko's metadata is refused: its output order means nothing
    without class names, and guessing them (class_0 ...) would print confident nonsense.
    """
    if not meta_path.exists():
        raise LeukoError(
            f"{model_path} has no {META_FILE} beside it: leuko needs a run's metadata "
            f"(classes, image size) to use a model; point {opt('model')} at a run directory "
            f"written by `{cmd('train')}`"
        )
    meta = read_json_object(meta_path, "run metadata")
    missing = [k for k in ("classes", "img_size") if not meta.get(k)]
    if missing:
        raise LeukoError(f"{meta_path} lacks {' and '.join(missing)}; it is not leuko run metadata")
    return meta


def load_bundle(path: Path, runtime: str = "keras", reporter: Reporter = SILENT, *,
                float32: bool = True) -> Bundle:
    """Load a run directory, `runs/latest`, a .keras file with leuko.json beside it, or an
    ensemble run (leuko cv), which becomes one model averaging its members. `runtime`
    "auto" takes the run's TensorFlow-free twin when it is fresh (modeling.twin), else
    Keras, saying why through `reporter`; "keras" is for Grad-CAM and training. `float32`:
    mixed-precision models compute in float32, as twins do (bfloat16 moved accuracy 1%)."""
    from .runtimes import exported_kind, load_runtime, read_card
    from .twin import check_runtime, twin_bundle

    auto = check_runtime(runtime) == "auto"

    p = resolve_run_dir(Path(path))
    kind = exported_kind(p)
    if kind:  # an exported artefact, run by its own runtime
        card = read_card(p)
        h, w = (int(v) for v in card["img_size"])
        classes = [str(c) for c in card["classes"]]
        return Bundle(load_runtime(p, kind, (h, w), len(classes)), classes, (h, w), card,
                      None, kind)
    members = ensemble_members(p)
    if members is not None:
        return _load_ensemble(p, members, auto, reporter)
    model_path, meta_path, run_dir = locate(p)
    if not zipfile.is_zipfile(model_path):
        raise LeukoError(f"{model_path} is not a Keras model file (a .keras file is a zip archive)")
    meta = read_run_meta(meta_path, model_path)
    if auto:
        twin = twin_bundle(model_path, meta, run_dir)
        if isinstance(twin, Bundle):
            return twin
        reporter.warn(f"{twin}; using Keras")
    from .export import computing_float32  # TensorFlow: only on the Keras path
    model = _load_model(model_path)
    model = computing_float32(model) if float32 else model
    h, w = (int(v) for v in meta["img_size"])
    classes = [str(c) for c in meta["classes"]]
    check_leuko_model(model, classes, (h, w), model_path)
    return Bundle(model=model, classes=classes, img_size=(h, w), meta=meta, run_dir=run_dir)
