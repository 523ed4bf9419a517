"""Keras callbacks of a leuko run: progress through a Reporter, Ctrl-C, and the run record.

Each is one concept, as in keras/src/callbacks: `EpochProgress` reports, `CtrlC` turns
a signal into a clean stop between batches, `RunRecorder` writes history and the model.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from .._tf import keras
from .._util.progress import Advance, Reporter

if TYPE_CHECKING:
    from .run import RunFolder


def learning_rate_of(model: keras.Model) -> float:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - a schedule or an odd optimizer: show nothing
        return float("nan")


FIRST_STEP_NOTE = "building the training step: a run's first batch takes longest"


class EpochProgress(keras.callbacks.Callback):
    """A task per epoch (batches, img/s, running loss/accuracy) and a summary line."""

    def __init__(self, reporter: Reporter, n_train: int, batch: int, epochs: int) -> None:
        super().__init__()
        self.reporter = reporter
        self.n_train = n_train
        self.batch = batch
        self.epochs = epochs
        self._stack = ExitStack()
        self._advance: Advance | None = None
        self._t0 = 0.0
        self._first = True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._first = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self.params.get("steps") if self.params else None
        self._t0 = time.perf_counter()
        self._advance = self._stack.enter_context(
            self.reporter.task(f"epoch {epoch + 1}/{self.epochs}", steps)
        )
        if self._first:  # a bar standing still for a minute (InceptionResNetV2) says why
            self._advance(0, note=FIRST_STEP_NOTE)
            self._first = False

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._advance is None:
            return
        logs = logs or {}
        seen = min((batch + 1) * self.batch, self.n_train)
        rate = seen / max(time.perf_counter() - self._t0, 1e-9)
        metrics = "  ".join(f"{k} {float(logs[k]):.4f}" for k in ("loss", "accuracy") if k in logs)
        self._advance(1, note=f"{rate:.1f} img/s  {metrics}")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.close()
        logs = logs or {}
        dt = time.perf_counter() - self._t0
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key.replace('_', ' ')} {float(logs[key]):.4f}")
        parts.append(f"lr {float(logs.get('learning_rate', learning_rate_of(self.model))):.2e}")
        parts.append(f"{dt:.0f}s ({self.n_train / max(dt, 1e-9):.1f} img/s)")
        self.reporter.info("  ".join(parts))

    def close(self) -> None:
        self._advance = None
        self._stack.close()
        self._stack = ExitStack()


class SyncMovingStatistics(keras.callbacks.Callback):
    """Averages BatchNormalization's moving statistics over all workers at each epoch end.

    Gradients are all-reduced, but each worker updates its moving mean and variance from
    its own batches, so under several workers the saved models would differ in them.
    Averaging them (once per epoch, before the model is saved) makes every worker save
    the same model, whatever the backbone.
    """

    def __init__(self, strategy: Any) -> None:
        super().__init__()
        self.strategy = strategy

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from .._tf import tf

        for v in self.model.non_trainable_weights:
            if not v.path.endswith(("moving_mean", "moving_variance")):
                continue
            local = self.strategy.run(lambda x=v: tf.identity(x.value))
            v.assign(self.strategy.reduce("MEAN", local, axis=None))


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


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """A Ctrl-C while a run builds its data and model waits for the build, then interrupts:
    inside TensorFlow's native calls Python's own KeyboardInterrupt can be lost."""
    guard = CtrlC()
    guard.install()
    try:
        yield
    finally:
        guard.restore()
    if guard.pressed:
        raise KeyboardInterrupt


class RunRecorder(keras.callbacks.Callback):
    """Appends history.csv rows and saves the kept model into the run folder.

    keep="best" saves the epoch with the lowest val_loss; keep="last" saves every epoch,
    so the model left is the last one and validation never chose it.
    """

    def __init__(self, run: RunFolder, phase: int, keep: str = "best") -> None:
        super().__init__()
        self.run = run
        self.phase = phase
        self.keep = keep
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        row = {
            "epoch": epoch, "phase": self.phase, "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"), "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "learning_rate": logs.get("learning_rate", learning_rate_of(self.model)),
            "seconds": round(time.perf_counter() - self._t0, 3),
        }
        self.run.append_history(row)
        self.run.meta["epochs_done"] = epoch + 1
        if self._kept(row.get("val_loss")):
            self.run.meta["best"] = {"epoch": epoch + 1, **{
                k: float(v) for k, v in row.items()
                if k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
                and v is not None
            }}
            self.run.save_model(self.model)
        else:
            self.run.write_meta()

    def _kept(self, val_loss: Any) -> bool:
        if self.keep == "last":
            return True
        best = self.run.meta.get("best") or {}
        return val_loss is not None and math.isfinite(float(val_loss)) and (
            not best or float(val_loss) < float(best.get("val_loss", math.inf))
        )
