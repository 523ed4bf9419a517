"""The run folder: its metadata, history and kept model, and the inputs it was fed.

A run folder describes itself (leuko.json: classes, image size, backbone, weights,
manifests with fingerprints, versions, kept epoch) and can be resumed after Ctrl-C or
a crash from its last completed epoch. `runs/latest` moves to a run only once the run
has saved a model, so a run stopped before its first epoch never hides a good one.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.files import atomic_write_json, os_error_message, read_json_object
from .._util.progress import SILENT, Reporter, spoken
from ..data.balance import check_balance_column, oversample
from ..data.dataset import Dataset, parse_renames, relabel, scan
from ..errors import LeukoError, cmd, opt
from ..modeling.bundle import META_FILE, point_latest, resolve_run_dir, save_bundle
from ..modeling.twin import TWIN_KEY
from .options import NO_VAL, TrainOptions, has_val

if TYPE_CHECKING:
    from .._tf import keras

HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
HISTORY_COLUMNS = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds",
)


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


def load_split(path: Path, which: str, reporter: Reporter = SILENT) -> Dataset:
    """Scan one split; unreadable files are reported and left out of training."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LeukoError(
            f"{which} manifest {p} not found: run `{cmd('split', 'DATASET')}` first "
            f"(or pass {opt(which, 'PATH')} to a manifest or class folder)"
        )
    try:
        data = scan(p, check="decode", reporter=reporter)
    except LeukoError as exc:
        raise LeukoError(f"{which} split: {exc.template}", exc.exit_code) from None
    if data.problems:
        first = data.problems[0]
        reporter.warn(
            f"{which}: {len(data.problems)} unusable file(s) left out "
            f"(first: {first.rel}: {first.reason})"
        )
    return data


def find_resume_dir(out: Path | None) -> Path:
    target = Path(out) if out is not None else Path("runs") / "latest"
    if not (target.exists() or target.is_symlink()):
        raise LeukoError(f"{opt('resume')}: there is no run at {target} to continue; start one "
                         f"with `{cmd('train', out=target)}`")
    run_dir = resolve_run_dir(target)
    if not (run_dir.is_dir() and (run_dir / META_FILE).exists()):
        raise LeukoError(
            f"{target} is not a leuko run directory (no {META_FILE}); nothing to resume"
        )
    return run_dir


def read_run_options(run_dir: Path) -> dict[str, Any]:
    """leuko.json of a run that can be resumed (it must hold the training options)."""
    meta = read_json_object(run_dir / META_FILE, "run metadata")
    if "options" not in meta:
        raise LeukoError(f"{run_dir / META_FILE} holds no saved training options; cannot resume")
    return meta


class RunFolder:
    """Metadata, history and model writes of one run folder, each atomic."""

    def __init__(self, run_dir: Path, meta: dict[str, Any], reporter: Reporter = SILENT,
                 latest: bool = True) -> None:
        self.dir = Path(run_dir)
        self.meta = meta
        self.reporter = reporter
        self._t_start = time.perf_counter()
        self._wall_before = float(meta.get("wall_time_s", 0.0))
        self.latest_note: str | None = None
        self._pointed = not latest  # a cv fold never moves runs/latest

    @property
    def history_path(self) -> Path:
        return self.dir / HISTORY_FILE

    def _touch_wall(self) -> None:
        self.meta["wall_time_s"] = round(
            self._wall_before + time.perf_counter() - self._t_start, 2
        )

    def write_meta(self) -> None:
        self._touch_wall()
        atomic_write_json(self.dir / META_FILE, self.meta)

    def save_model(self, model: keras.Model) -> None:
        """Save the kept model; the first save of a run points `latest` at it.

        Without its twin: converting costs seconds (modeling.twin), so `write_twin` makes
        it once, when the run is finished, not at every kept epoch.
        """
        self._touch_wall()
        save_bundle(self.dir, model, self.meta, twin=False)  # drops a twin made earlier
        self.meta.pop(TWIN_KEY, None)
        if not self._pointed:
            self._pointed = True
            self.latest_note = point_latest(self.dir)
            if self.latest_note:
                self.reporter.warn(self.latest_note)

    def write_twin(self) -> None:
        """Make the kept model's TensorFlow-free twin and record it; a converter failure is
        one warning (predict then uses Keras), never a lost run."""
        from ..modeling.twin import write_twin

        try:
            self.meta[TWIN_KEY] = write_twin(self.dir)
        except LeukoError as exc:
            self.reporter.warn(f"no TensorFlow-free twin for {self.dir} ({exc}); predict "
                               "will load Keras")
        self.write_meta()

    def append_history(self, row: dict[str, Any]) -> None:
        new = not self.history_path.exists()
        try:
            with self.history_path.open("a", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(HISTORY_COLUMNS))
                if new:
                    writer.writeheader()
                writer.writerow(
                    {k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS}
                )
        except OSError as exc:
            raise LeukoError(os_error_message(exc, self.history_path)) from None


@dataclass
class Inputs:
    train: Dataset
    val: Dataset
    classes: list[str]
    manifests: dict[str, Any]


def load_inputs(opts: TrainOptions, reporter: Reporter = SILENT) -> Inputs:
    """Scan both splits and check they hold the same classes."""
    mapping = parse_renames(opts.mapping)
    if opts.balance_by is not None:  # before any image is read
        check_balance_column(Path(opts.train_csv), opts.balance_by)
    train = relabel(load_split(Path(opts.train_csv), "train", reporter), mapping)
    if has_val(opts):
        val = relabel(load_split(Path(opts.val_csv), "val", reporter), mapping)
    else:  # --val none: train on every labelled cell, a fixed schedule
        val = Dataset(train.root, train.source, train.layout, [], [], list(train.classes))
    relabelled = None
    if opts.relabel:
        from ..data.corrections import relabel_parts

        (train, val), relabelled = relabel_parts([train, val], opts.relabel)
        reporter.info(spoken(reporter, f"{opt('relabel')}: {relabelled['changed']} image(s) "
                             f"given another class, {relabelled['excluded']} left out"))
    tr, va = set(train.classes), set(val.classes)
    if tr != va:
        parts = [f"only in {name}: {', '.join(sorted(s))}"
                 for name, s in (("train", tr - va), ("val", va - tr)) if s]
        raise LeukoError(
            f"train and val have different classes ({'; '.join(parts)}); re-split so both "
            f"hold every class"
        )
    classes = sorted(tr)
    if len(classes) < 2:
        raise LeukoError(f"need at least 2 classes to train (found {', '.join(classes)})")
    manifests = {}
    for name, data, p in (("train", train, opts.train_csv), ("val", val, opts.val_csv)):
        if name == "val" and not has_val(opts):
            manifests[name] = {"path": NO_VAL, "rows": 0}
            continue
        path = Path(p).expanduser()
        manifests[name] = {
            "path": str(path.resolve()), "rows": len(data.records),
            "skipped": len(data.problems), "fingerprint": fingerprint(path, data),
            "class_counts": data.counts(),
        }
    if relabelled is not None:
        manifests["relabel"] = relabelled
    if opts.balance_by:  # after the fingerprint, which is the manifest's as written
        train, times = oversample(train, opts.balance_by)
        manifests["train"]["balanced"] = {"by": opts.balance_by, "times": times,
                                          "rows": len(train.records)}
        reporter.info(f"balanced by {opts.balance_by}: " + ", ".join(
            f"{v} x{t}" for v, t in times.items()) + f" ({len(train.records)} rows an epoch)")
    return Inputs(train, val, classes, manifests)
