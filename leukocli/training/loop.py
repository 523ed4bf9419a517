"""The training run: validate inputs, build the model, fit with callbacks, write the run dir.

A run directory describes itself (leuko.json: classes, image size, backbone, weights,
manifests with fingerprints, versions, best epoch) and can be resumed after Ctrl-C or a
crash from its last completed epoch (Keras BackupAndRestore in run_dir/checkpoints).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import __version__
from ._tf import keras, tf
from .bundle import META_FILE, MODEL_FILE, point_latest, resolve_run_dir, save_bundle
from .console import err_console, info, make_progress, warn
from .dataset import Dataset, parse_size, scan
from .errors import EXIT_INTERRUPTED, LeukoError
from .loader import build_dataset
from .model import (
    build_model,
    check_input_size,
    get_backbone_spec,
    resolve_weights,
    set_backbone_trainable,
)
from .report import plot_curves

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
HISTORY_COLUMNS = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds",
)


@dataclass
class TrainOptions:
    """Everything that defines a run; saved in leuko.json so --resume can reuse it."""

    train_csv: str = "splits/train.csv"
    val_csv: str = "splits/val.csv"
    img_size: tuple[int, int] = (240, 320)
    batch: int = 20
    epochs: int | None = None  # None: the recipe's
    lr: float = 1e-3
    backbone: str = "inceptionresnetv2"
    weights: str = "auto"
    unfreeze: int = 0
    augment: bool = True
    class_weights: str = "auto"
    patience: int = 5
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 42
    recipe: str = "auto"
    crop_cell: int | None = None  # None: the recipe's choice; 0: off; S: SxS crop
    label_smoothing: float | None = None  # None: the recipe's choice
    keep: str | None = None  # which epoch's model to save: best (val loss) or last

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainOptions:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "img_size" in known:
            known["img_size"] = (int(known["img_size"][0]), int(known["img_size"][1]))
        return cls(**known)


@dataclass
class TrainResult:
    """What a run produced; `interrupted` runs can be continued with resume=True."""

    run_dir: Path
    interrupted: bool
    epochs_done: int
    epochs_planned: int
    best_epoch: int | None
    best: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    keep: str = "best"  # how best_epoch was chosen: lowest val loss, or the last epoch


# --------------------------------------------------------------------------- environment
def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has native bfloat16 math (AVX512_BF16 or AMX), where bf16 pays off."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_precision(name: str) -> str:
    """Resolve --precision: auto = mixed_float16 on GPU, mixed_bfloat16 on bf16 CPUs, else fp32."""
    key = (name or "auto").strip().lower()
    if key not in PRECISIONS:
        raise LeukoError(f"unknown --precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if key != "auto":
        return key
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_fast_bf16() else "float32"


def check_strategy_name(name: str) -> str:
    key = (name or "auto").strip().lower()
    if key not in STRATEGIES:
        raise LeukoError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return key


def make_strategy(name: str) -> tuple[tf.distribute.Strategy, str]:
    """Resolve --strategy to a tf.distribute strategy and a description for leuko.json.

    auto: mirrored over all GPUs when there are several, else the default strategy.
    mirrored: over the visible GPUs, or over the logical CPU devices when several are
    configured (tf.config.set_logical_device_configuration), else over the one device.
    multiworker: MultiWorkerMirroredStrategy across machines described by TF_CONFIG (the
    same command on every worker); without TF_CONFIG it trains as a single worker.
    """
    key = check_strategy_name(name)
    if key == "multiworker":
        # Before anything else touches the devices: collective ops are configured at start.
        mw = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = mw.cluster_resolver
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        workers = sum(len(v) for v in spec.values()) or 1
        task = f"{resolver.task_type}:{resolver.task_id}" if resolver and spec else "single"
        return mw, (
            f"multi-worker mirrored ({workers} worker(s), this is {task}; "
            f"{mw.num_replicas_in_sync} replica(s))"
        )
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if key == "auto":
        key = "mirrored" if len(gpus) > 1 else "default"
    if key == "default":
        return tf.distribute.get_strategy(), "default"
    devices = gpus if gpus else cpus
    if len(devices) < 2:
        warn(f"--strategy mirrored with one device ({devices[0] if devices else 'cpu'})")
    strategy = tf.distribute.MirroredStrategy(devices=devices or None)
    n = strategy.num_replicas_in_sync
    return strategy, f"mirrored over {n} device(s): {', '.join(devices)}"


# --------------------------------------------------------------------------- inputs
def fingerprint(path: Path, data: Dataset) -> str:
    """sha256 of a manifest's bytes; for a folder, of its (path, label, size) listing."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
    else:
        for r in sorted(data.records, key=lambda r: r.rel):
            size = r.path.stat().st_size if r.path.exists() else -1
            h.update(f"{r.rel}\t{r.label}\t{size}\n".encode())
    return "sha256:" + h.hexdigest()


def load_split(path: Path, which: str) -> Dataset:
    """Scan one split; unreadable files are reported and left out of training."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LeukoError(
            f"{which} manifest {p} not found: run `leuko split DATASET` first "
            f"(or pass --{which} PATH to a manifest or class folder)"
        )
    try:
        data = scan(p, check="decode")
    except LeukoError as exc:
        raise LeukoError(f"{which} split: {exc}") from None
    if not data.records:
        raise LeukoError(f"{which} split {p} is empty")
    if data.problems:
        first = data.problems[0]
        warn(
            f"{which}: {len(data.problems)} unusable file(s) left out "
            f"(first: {first.rel}: {first.reason})"
        )
    return data


def class_weight_map(labels: Sequence[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """'auto': weights inversely proportional to class counts (mean 1); 'none': None."""
    key = (mode or "auto").strip().lower()
    if key == "none":
        return None
    if key != "auto":
        raise LeukoError(f"unknown --class-weights {mode!r}; choose auto or none")
    counts = [0] * n_classes
    for y in labels:
        counts[y] += 1
    total = sum(counts)
    return {i: (total / (n_classes * c) if c else 0.0) for i, c in enumerate(counts)}


@dataclass(frozen=True)
class Recipe:
    """A named set of training choices; explicit options override its fields."""

    name: str
    augment: str  # a loader.AUGMENT_POLICIES name
    crop_cell: int  # 0: whole image
    label_smoothing: float
    schedule: str  # "plateau" (ReduceLROnPlateau, the paper's) or "cosine" (warm-up + decay)
    weight_decay: float  # > 0: AdamW
    epochs: int  # the default length; the cosine schedule is fitted to it
    keep: str = "best"  # the saved epoch: "best" by validation loss, or "last"


RECIPES: dict[str, Recipe] = {
    # The reference paper's: Adam, ReduceLROnPlateau, flips and rotations, whole image.
    "paper": Recipe("paper", "paper", 0, 0.0, "plateau", 0.0, 30, "best"),
    # From scratch on a CPU: find the cell and crop around it, augment the way the data
    # varies (shear, shifts, contrast stretch, stain colour), smooth labels, cosine decay.
    # The schedule sets the end, so there is no early stop and the last epoch is kept:
    # choosing an epoch by validation loss would make the validation figures optimistic
    # (README, Accuracy). Crop size and length are measured.
    "cpu": Recipe("cpu", "strong", 128, 0.1, "cosine", 1e-4, 8, "last"),
}


def resolve_recipe(opts: TrainOptions) -> Recipe:
    """`auto` is `cpu` for the from-scratch `compact` backbone and `paper` otherwise."""
    name = (opts.recipe or "auto").strip().lower()
    if name == "auto":
        name = "cpu" if opts.backbone == "compact" else "paper"
    if name not in RECIPES:
        raise LeukoError(f"unknown --recipe {opts.recipe!r}; choose auto, {', '.join(RECIPES)}")
    base = RECIPES[name]
    crop = base.crop_cell if opts.crop_cell is None else int(opts.crop_cell)
    smoothing = base.label_smoothing if opts.label_smoothing is None else opts.label_smoothing
    epochs = base.epochs if opts.epochs is None else int(opts.epochs)
    keep = base.keep if opts.keep is None else opts.keep.strip().lower()
    if keep not in ("best", "last"):
        raise LeukoError(f"unknown --keep {opts.keep!r}; choose best or last")
    return Recipe(base.name, base.augment, crop, float(smoothing), base.schedule,
                  base.weight_decay, epochs, keep)


@dataclass
class _Prepared:
    opts: TrainOptions
    train: Dataset
    val: Dataset
    classes: list[str]
    weights: str | None
    precision: str
    manifests: dict[str, Any]
    recipe: Recipe


def _validate(opts: TrainOptions) -> _Prepared:
    """Every check that needs no model: fail in seconds, not after building one."""
    spec = get_backbone_spec(opts.backbone)
    opts.backbone = spec.name
    recipe = resolve_recipe(opts)
    opts.epochs = recipe.epochs  # saved with the run, so --resume plans the same length
    opts.keep = recipe.keep
    if recipe.crop_cell < 0:
        raise LeukoError(f"--crop-cell must be 0 (off) or a crop size (got {recipe.crop_cell})")
    if not 0.0 <= recipe.label_smoothing < 1.0:
        raise LeukoError(
            f"--label-smoothing must be in [0, 1) (got {recipe.label_smoothing})"
        )
    check_input_size(spec, opts.img_size)
    if recipe.crop_cell:
        check_input_size(spec, (recipe.crop_cell, recipe.crop_cell))
    if opts.batch < 1:
        raise LeukoError(f"--batch must be at least 1 (got {opts.batch})")
    if recipe.epochs < 1:
        raise LeukoError(f"--epochs must be at least 1 (got {recipe.epochs})")
    if not (opts.lr > 0 and math.isfinite(opts.lr)):
        raise LeukoError(f"--lr must be a positive number (got {opts.lr})")
    if opts.unfreeze < 0:
        raise LeukoError(
            f"--unfreeze must be 0 (all) or a positive layer count (got {opts.unfreeze})"
        )
    if opts.patience < 1:
        raise LeukoError(f"--patience must be at least 1 (got {opts.patience})")
    if (opts.class_weights or "").strip().lower() not in ("auto", "none"):
        raise LeukoError(f"unknown --class-weights {opts.class_weights!r}; choose auto or none")
    precision = pick_precision(opts.precision)
    check_strategy_name(opts.strategy)
    weights = resolve_weights(spec, opts.weights)

    train = load_split(Path(opts.train_csv), "train")
    val = load_split(Path(opts.val_csv), "val")
    tr, va = set(train.classes), set(val.classes)
    if tr != va:
        only_t = sorted(tr - va)
        only_v = sorted(va - tr)
        parts = []
        if only_t:
            parts.append(f"only in train: {', '.join(only_t)}")
        if only_v:
            parts.append(f"only in val: {', '.join(only_v)}")
        raise LeukoError(
            f"train and val have different classes ({'; '.join(parts)}); re-split so both "
            f"hold every class"
        )
    classes = sorted(tr)
    if len(classes) < 2:
        raise LeukoError(f"need at least 2 classes to train (found {', '.join(classes)})")
    manifests = {}
    for name, data, p in (("train", train, opts.train_csv), ("val", val, opts.val_csv)):
        path = Path(p).expanduser()
        manifests[name] = {
            "path": str(path.resolve()),
            "rows": len(data.records),
            "skipped": len(data.problems),
            "fingerprint": fingerprint(path, data),
            "class_counts": data.counts(),
        }
    return _Prepared(opts, train, val, classes, weights, precision, manifests, recipe)


# --------------------------------------------------------------------------- callbacks
def _lr_of(model: keras.Model) -> float:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - a schedule or an odd optimizer: show nothing
        return float("nan")


class RichProgress(keras.callbacks.Callback):
    """A bar per epoch (batches, img/s, ETA, running loss/accuracy) and a summary line."""

    def __init__(self, n_train: int, batch: int, epochs: int) -> None:
        super().__init__()
        from rich.progress import TextColumn

        self.n_train = n_train
        self.batch = batch
        self.epochs = epochs
        self.progress = make_progress(
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[metrics]}"),
            transient=True,
        )
        self._task: Any = None
        self._t0 = 0.0
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start()
        steps = self.params.get("steps") if self.params else None
        self._t0 = time.perf_counter()
        self._task = self.progress.add_task(
            f"epoch {epoch + 1}/{self.epochs}", total=steps, rate="", metrics=""
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._task is None:
            return
        logs = logs or {}
        seen = min((batch + 1) * self.batch, self.n_train)
        dt = max(time.perf_counter() - self._t0, 1e-9)
        metrics = "  ".join(
            f"{k} {float(logs[k]):.4f}" for k in ("loss", "accuracy") if k in logs
        )
        self.progress.update(
            self._task, completed=batch + 1, rate=f"{seen / dt:.1f} img/s", metrics=metrics
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        dt = time.perf_counter() - self._t0
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None
        lr = logs.get("learning_rate", _lr_of(self.model))
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key.replace('_', ' ')} {float(logs[key]):.4f}")
        parts.append(f"lr {float(lr):.2e}")
        parts.append(f"{dt:.0f}s ({self.n_train / max(dt, 1e-9):.1f} img/s)")
        line = "  ".join(parts)
        if self._started and self.progress.live.is_started:
            self.progress.console.print(line, markup=False, highlight=False)
        else:
            info(line)


class CtrlC(keras.callbacks.Callback):
    """Turns the first Ctrl-C into a KeyboardInterrupt raised at the next batch boundary.

    Python's own handler raises wherever the main thread is, and inside TensorFlow's
    native calls that exception can be lost, so a run sometimes ignored Ctrl-C. Here the
    signal only sets a flag and the interrupt is raised from this callback, in plain
    Python between batches; a second Ctrl-C falls back to the default handler.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pressed = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pressed = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _check(self, *args: Any, **kwargs: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_begin = on_train_batch_end = _check
    on_test_batch_end = on_epoch_begin = on_epoch_end = _check


class RunRecorder(keras.callbacks.Callback):
    """Appends history.csv rows and saves the kept model through save_bundle.

    keep="best" saves the epoch with the lowest val_loss; keep="last" saves every epoch,
    so the model left is the last one and validation never chose it.
    """

    def __init__(self, run: _Run, phase: int, keep: str = "best") -> None:
        super().__init__()
        self.run = run
        self.phase = phase
        self.keep = keep
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        lr = logs.get("learning_rate", _lr_of(self.model))
        row = {
            "epoch": epoch,
            "phase": self.phase,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": lr,
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        self.run.append_history(row)
        self.run.meta["epochs_done"] = epoch + 1
        val_loss = logs.get("val_loss")
        best = self.run.meta.get("best") or {}
        if self.keep == "last" or val_loss is not None and math.isfinite(float(val_loss)) and (
            not best or float(val_loss) < float(best.get("val_loss", math.inf))
        ):
            self.run.meta["best"] = {
                "epoch": epoch + 1,
                **{k: float(v) for k, v in row.items() if k in (
                    "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"
                ) and v is not None},
            }
            self.run.save_model(self.model)
        else:
            self.run.write_meta()


# --------------------------------------------------------------------------- the run
class _Run:
    """The run directory: metadata, history and best-model writes in one place."""

    def __init__(self, run_dir: Path, meta: dict[str, Any]) -> None:
        self.dir = run_dir
        self.meta = meta
        self._t_start = time.perf_counter()
        self._wall_before = float(meta.get("wall_time_s", 0.0))

    @property
    def history_path(self) -> Path:
        return self.dir / HISTORY_FILE

    def _touch_wall(self) -> None:
        self.meta["wall_time_s"] = round(
            self._wall_before + time.perf_counter() - self._t_start, 2
        )

    def write_meta(self) -> None:
        self._touch_wall()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{META_FILE}.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / META_FILE)

    def save_model(self, model: keras.Model) -> None:
        self._touch_wall()
        save_bundle(self.dir, model, self.meta)

    def append_history(self, row: dict[str, Any]) -> None:
        new = not self.history_path.exists()
        with self.history_path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(HISTORY_COLUMNS))
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})


def head_epochs_for(epochs: int) -> int:
    """Epochs of head-only training before fine-tuning (transfer schedule)."""
    if epochs <= 1:
        return epochs
    return max(1, min(5, epochs // 4))


def make_optimizer(
    recipe: Recipe, lr: float, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """Adam at a fixed rate (ReduceLROnPlateau lowers it), or AdamW on a cosine schedule.

    The cosine schedule warms up over the first tenth of the steps (at most one epoch),
    then decays to 1% of `lr` by the last planned epoch.
    """
    if recipe.schedule == "cosine":
        total = max(1, steps_per_epoch * epochs)
        warmup = min(steps_per_epoch, total // 10)
        rate: Any = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 10.0 if warmup else lr,
            decay_steps=max(1, total - warmup),
            alpha=0.01,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    else:
        rate = lr
    if recipe.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(learning_rate=rate)


def _default_run_dir(backbone: str) -> Path:
    return Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{backbone}"


def _find_resume_dir(out: Path | None) -> Path:
    target = Path(out) if out is not None else Path("runs") / "latest"
    run_dir = resolve_run_dir(target)
    if not (run_dir.is_dir() and (run_dir / META_FILE).exists()):
        raise LeukoError(
            f"{target} is not a leuko run directory (no {META_FILE}); nothing to resume"
        )
    return run_dir


def _read_meta(run_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LeukoError(f"{run_dir / META_FILE} is unreadable ({exc})".splitlines()[0]) from None
    if not isinstance(meta, dict) or "options" not in meta:
        raise LeukoError(f"{run_dir / META_FILE} holds no saved training options; cannot resume")
    return meta


def train(
    opts: TrainOptions,
    out: Path | None = None,
    resume: bool = False,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train (or resume) a run; returns a TrainResult (interrupted=True after Ctrl-C).

    With resume=True the options saved in `out` (or runs/latest) are reused and `opts`
    is ignored; training continues from the last completed epoch to the planned count.
    """
    if resume:
        run_dir = _find_resume_dir(out)
        meta = _read_meta(run_dir)
        opts = TrainOptions.from_json(meta["options"])
        if meta.get("status") == "finished":
            done = meta.get("epochs_done")
            info(f"{run_dir} already finished ({done} epochs); nothing to resume")
            return _result(run_dir, meta, interrupted=False)
        info(f"resuming {run_dir} from epoch {int(meta.get('epochs_done', 0)) + 1}/{opts.epochs}")
    else:
        run_dir = Path(out) if out is not None else _default_run_dir(
            get_backbone_spec(opts.backbone).name
        )
        if (run_dir / META_FILE).exists():
            raise LeukoError(
                f"{run_dir} already holds a run; use --resume to continue it or another --out"
            )
        meta = {}

    prep = _validate(opts)
    opts = prep.opts
    spec = get_backbone_spec(opts.backbone)
    strategy_key = check_strategy_name(opts.strategy)

    keras.utils.set_random_seed(opts.seed)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(prep.precision)
    try:
        strategy, strategy_desc = make_strategy(strategy_key)
        return _fit(prep, spec.name, spec.describe_preprocessing(), run_dir, meta, resume,
                    strategy, strategy_desc, extra_callbacks)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _result(run_dir: Path, meta: dict[str, Any], interrupted: bool) -> TrainResult:
    best = meta.get("best") or {}
    return TrainResult(
        run_dir=run_dir,
        interrupted=interrupted,
        epochs_done=int(meta.get("epochs_done", 0)),
        epochs_planned=int(meta.get("epochs_planned", 0)),
        best_epoch=best.get("epoch"),
        best={k: v for k, v in best.items() if k != "epoch"},
        wall_time_s=float(meta.get("wall_time_s", 0.0)),
        keep=str((meta.get("options") or {}).get("keep") or "best"),
    )


def _fit(
    prep: _Prepared,
    backbone: str,
    preprocessing: str,
    run_dir: Path,
    meta: dict[str, Any],
    resume: bool,
    strategy: tf.distribute.Strategy,
    strategy_desc: str,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> TrainResult:
    opts = prep.opts
    epochs = prep.recipe.epochs
    classes = prep.classes
    index = {c: i for i, c in enumerate(classes)}
    train_paths = [str(r.path) for r in prep.train.records]
    train_labels = [index[r.label] for r in prep.train.records]
    val_paths = [str(r.path) for r in prep.val.records]
    val_labels = [index[r.label] for r in prep.val.records]
    pretrained = prep.weights is not None
    head_epochs = head_epochs_for(epochs) if pretrained else 0

    if resume:
        old = meta.get("manifests", {})
        for name in ("train", "val"):
            before = old.get(name, {}).get("fingerprint")
            if before not in (None, prep.manifests[name]["fingerprint"]):
                warn(f"the {name} manifest changed since this run started; resuming anyway")
    meta.update(
        {
            "leuko_version": __version__,
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "python_version": platform.python_version(),
            "classes": classes,
            "img_size": list(opts.img_size),
            "backbone": backbone,
            "weights": (
                prep.weights if prep.weights in (None, "imagenet") else f"file:{prep.weights}"
            ),
            "preprocessing": preprocessing,
            "input": "raw RGB 0-255 float32, shape (None, h, w, 3); output softmax over classes",
            "manifests": prep.manifests,
            "seed": opts.seed,
            "precision": prep.precision,
            "strategy": strategy_desc,
            "augment": opts.augment,
            "recipe": prep.recipe.name,
            "augment_policy": prep.recipe.augment if opts.augment else None,
            "crop_cell": prep.recipe.crop_cell,
            "label_smoothing": prep.recipe.label_smoothing,
            "lr_schedule": prep.recipe.schedule,
            "weight_decay": prep.recipe.weight_decay,
            "epochs_planned": epochs,
            "head_epochs": head_epochs,
            "options": opts.to_json(),
            "status": "running",
        }
    )
    meta.setdefault("created", datetime.now().isoformat(timespec="seconds"))
    meta.setdefault("epochs_done", 0)
    meta.setdefault("best", None)
    run = _Run(run_dir, meta)
    run.write_meta()
    point_latest(run_dir)

    n_classes = len(classes)
    train_ds = build_dataset(
        train_paths, train_labels, opts.img_size, opts.batch, training=True,
        augment=prep.recipe.augment if opts.augment else False, seed=opts.seed,
        n_classes=len(classes),
    )
    val_ds = build_dataset(val_paths, val_labels, opts.img_size, opts.batch,
                           n_classes=len(classes))
    cw = class_weight_map(train_labels, n_classes, opts.class_weights)

    info(
        f"training {backbone} "
        f"({'weights ' + str(meta['weights']) if pretrained else 'from scratch'})"
        f" on {len(train_paths)} images, validating on {len(val_paths)}; {n_classes} classes, "
        f"{opts.img_size[0]}x{opts.img_size[1]}, batch {opts.batch}, {prep.precision}, "
        f"{strategy_desc}; run: {run_dir}"
    )
    with strategy.scope():
        model = build_model(
            backbone, opts.img_size, n_classes, weights=prep.weights,
            crop_cell=prep.recipe.crop_cell,
            # a from-scratch BatchNorm needs a fast average only when epochs are short
            bn_momentum=0.5 if len(train_paths) / opts.batch < 100 else 0.9,
        )

    ckpt_root = run_dir / CHECKPOINT_DIR
    phase1_end = ckpt_root / "phase1_end.weights.h5"
    progress = RichProgress(len(train_paths), opts.batch, epochs)
    # (phase, first epoch, end epoch, learning rate, backbone trainable)
    phases: list[tuple[int, int, int, float, bool]] = []
    if head_epochs:
        phases.append((1, 0, head_epochs, opts.lr, False))
        if epochs > head_epochs:
            phases.append((2, head_epochs, epochs, opts.lr / 10.0, True))
    else:
        phases.append((2 if pretrained else 0, 0, epochs, opts.lr, True))

    interrupted = False
    stopped_early = False
    ctrl_c = CtrlC()
    ctrl_c.install()
    try:
        for phase, start, end, lr, trainable in phases:
            if int(meta.get("epochs_done", 0)) >= end and (phase != 1 or phase1_end.exists()):
                continue  # finished before an interruption
            if pretrained:
                set_backbone_trainable(model, trainable, opts.unfreeze if phase == 2 else 0)
            with strategy.scope():
                model.compile(
                    optimizer=make_optimizer(
                        prep.recipe, lr, steps_per_epoch=math.ceil(len(train_paths) / opts.batch),
                        epochs=end - start,
                    ),
                    loss=keras.losses.CategoricalCrossentropy(
                        label_smoothing=prep.recipe.label_smoothing
                    ),
                    metrics=["accuracy"],
                )
            if phase == 2 and head_epochs and phase1_end.exists():
                with warnings.catch_warnings():  # phase 1's optimizer state is not wanted
                    warnings.simplefilter("ignore")
                    model.load_weights(str(phase1_end))
            # state first, then the summary line: once a user sees "epoch N", epoch N is saved
            callbacks: list[keras.callbacks.Callback] = [
                RunRecorder(run, phase, prep.recipe.keep),
                keras.callbacks.BackupAndRestore(
                    str(ckpt_root / f"phase{phase}"), double_checkpoint=True
                ),
                progress,
            ]
            if phase != 1 and prep.recipe.schedule == "plateau":
                callbacks += [
                    keras.callbacks.ReduceLROnPlateau(
                        monitor="val_loss", factor=0.2, patience=max(1, opts.patience // 2),
                        min_lr=1e-7, verbose=0,
                    ),
                    keras.callbacks.EarlyStopping(
                        monitor="val_loss", patience=opts.patience,
                        restore_best_weights=prep.recipe.keep == "best",
                        verbose=0,
                    ),
                ]
            callbacks += [*extra_callbacks, ctrl_c]  # last: an epoch's state is saved first
            model._initial_epoch = None  # BackupAndRestore of an earlier phase must not leak
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
                    model.fit(
                        train_ds, validation_data=val_ds, epochs=end, initial_epoch=start,
                        class_weight=cw, callbacks=callbacks, verbose=0,
                    )
            finally:
                progress.stop()
            if model.stop_training and int(meta.get("epochs_done", 0)) < end:
                stopped_early = True
            if phase == 1:
                ckpt_root.mkdir(parents=True, exist_ok=True)
                model.save_weights(str(phase1_end))
            if stopped_early:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        ctrl_c.restore()

    if interrupted:
        meta["status"] = "interrupted"
        run.write_meta()
    else:
        meta["status"] = "finished"
        meta["stopped_early"] = stopped_early
        if meta.get("best") is None:
            # no finite val_loss ever: keep the last model rather than none
            run.save_model(model)
        run.write_meta()
        if phase1_end.exists():
            phase1_end.unlink()
        try:
            ckpt_root.rmdir()
        except OSError:
            pass
    if run.history_path.exists():
        try:
            title = f"{backbone} — {run_dir.name}"
            plot_curves(run.history_path, run_dir / CURVES_FILE, title=title)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose a trained run
            warn(f"could not draw {CURVES_FILE}: {exc}")
    return _result(run_dir, meta, interrupted)


# --------------------------------------------------------------------------- CLI
def run_train_cli(
    train_csv: Path,
    val_csv: Path,
    img: str,
    batch: int,
    epochs: int | None,
    lr: float,
    backbone: str,
    weights: str,
    unfreeze: int,
    augment: bool,
    class_weights: str,
    patience: int,
    precision: str,
    strategy: str,
    seed: int,
    out: Path | None,
    resume: bool,
    recipe: str = "auto",
    crop_cell: int | None = None,
    label_smoothing: float | None = None,
    keep: str | None = None,
) -> None:
    """`leuko train`: validate, train, and print where the run is and how it went."""
    from .console import console
    from .report import history_table, read_history

    if resume:
        result = train(TrainOptions(), out=out, resume=True)
    else:
        opts = TrainOptions(
            train_csv=str(Path(train_csv).expanduser().absolute()),
            val_csv=str(Path(val_csv).expanduser().absolute()), img_size=parse_size(img),
            batch=batch, epochs=epochs, lr=lr, backbone=backbone, weights=weights,
            unfreeze=unfreeze, augment=augment, class_weights=class_weights,
            patience=patience, precision=precision, strategy=strategy, seed=seed,
            recipe=recipe, crop_cell=crop_cell, label_smoothing=label_smoothing, keep=keep,
        )
        result = train(opts, out=out)
    if result.interrupted:
        err_console.print(
            f"[yellow]stopped[/yellow] after epoch {result.epochs_done}/{result.epochs_planned}; "
            f"state saved in {result.run_dir / CHECKPOINT_DIR}. Resume with:\n"
            f"  leuko train --resume --out {result.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(EXIT_INTERRUPTED)
    hist = result.run_dir / HISTORY_FILE
    if hist.exists():
        console.print(history_table(read_history(hist), best_epoch=result.best_epoch))
    best = result.best
    if result.best_epoch is not None:
        which = "last epoch" if result.keep == "last" else "best epoch"
        console.print(
            f"{which} {result.best_epoch} saved: "
            f"val loss {best.get('val_loss', float('nan')):.4f}, "
            f"val accuracy {best.get('val_accuracy', float('nan')):.4f}"
        )
    console.print(
        f"run saved in {result.run_dir} ({MODEL_FILE}, {META_FILE}, {HISTORY_FILE}, "
        f"{CURVES_FILE}); runs/latest points at it ({result.wall_time_s:.0f}s)"
    )
