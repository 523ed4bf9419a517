"""The learning schedule of a run: phases, their lengths, the optimizer, class weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .._tf import keras
from .options import Recipe


class Phase(NamedTuple):
    """One model.fit call: 0 from scratch, 1 head only, 2 fine-tuning (or all, pretrained)."""

    number: int
    start: int
    end: int
    lr: float
    backbone_trainable: bool


def head_epochs_for(epochs: int) -> int:
    """Epochs of head-only training before fine-tuning (transfer schedule)."""
    if epochs <= 1:
        return epochs
    return max(1, min(5, epochs // 4))


def phases_for(epochs: int, lr: float, pretrained: bool) -> list[Phase]:
    """Pretrained: the head first on a frozen backbone, then everything at lr/10."""
    head = head_epochs_for(epochs) if pretrained else 0
    if not head:
        return [Phase(2 if pretrained else 0, 0, epochs, lr, True)]
    out = [Phase(1, 0, head, lr, False)]
    if epochs > head:
        out.append(Phase(2, head, epochs, lr / 10.0, True))
    return out


def class_weight_map(labels: Sequence[int], n_classes: int, mode: str) -> dict[int, float] | None:
    """'auto': weights inversely proportional to class counts (mean 1); 'none': None."""
    if (mode or "auto").strip().lower() == "none":
        return None
    counts = [0] * n_classes
    for y in labels:
        counts[y] += 1
    total = sum(counts)
    return {i: (total / (n_classes * c) if c else 0.0) for i, c in enumerate(counts)}


def make_optimizer(
    recipe: Recipe, lr: float, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """Adam at a fixed rate (ReduceLROnPlateau lowers it), or AdamW on a cosine schedule.

    The cosine schedule warms up over the first tenth of the steps (at most one epoch),
    then decays to 1% of `lr` by the last planned epoch.
    """
    rate: Any = lr
    if recipe.schedule == "cosine":
        total = max(1, steps_per_epoch * epochs)
        warmup = min(steps_per_epoch, total // 10)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 10.0 if warmup else lr,
            decay_steps=max(1, total - warmup),
            alpha=0.01,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if recipe.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(learning_rate=rate)


def compile_for_training(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float
) -> None:
    """Compile with a metric object and build the optimizer now. Keras otherwise makes
    those variables while tracing its train step, and TensorFlow then traces the step a
    second time: the slow part of a run's start (benchmarks/train_startup.py)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)  # the loss-scale wrapper too, if any
