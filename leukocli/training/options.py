"""Everything that defines a training run, its defaults and every check on it, in one place.

`TrainOptions` holds what the user chose (its field defaults are the command line's
defaults); `resolve` checks it all and returns a `TrainPlan` with the recipe's choices
filled in, without changing the options it was given. No TensorFlow here: a bad option
is refused in a fraction of a second, before any model exists.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..data.dataset import parse_renames
from ..errors import ParameterError, check_batch, opt
from ..modeling.backbones import (
    check_input_size,
    get_backbone_spec,
    resolve_weights,
    source_backbone,
    source_meta,
    weights_source,
)

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
CLASS_WEIGHTS = ("auto", "none")
KEEP = ("best", "last")


@dataclass(frozen=True)
class TrainOptions:
    """A run's options as the user gave them; saved in leuko.json so --resume reuses them.

    None means "the recipe's choice" (epochs, crop_cell, label_smoothing, keep).
    """

    train_csv: str = "splits/train.csv"
    val_csv: str = "splits/val.csv"
    img_size: tuple[int, int] = (240, 320)
    batch: int = 20
    epochs: int | None = None
    lr: float = 1e-3
    backbone: str = "auto"  # the --weights run's backbone, else DEFAULT_BACKBONE
    weights: str = "auto"
    unfreeze: int = 0
    augment: bool = True
    class_weights: str = "auto"
    patience: int = 5
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 42
    recipe: str = "auto"
    crop_cell: int | None = None
    crop_scale: float | None = None
    label_smoothing: float | None = None
    keep: str | None = None
    mapping: tuple[str, ...] = ()  # OLD=NEW renames of the training data's classes
    relabel: str | None = None  # a corrections CSV (leuko review): per-image labels
    balance_by: str | None = None  # a manifest column (lab, site) whose values weigh alike

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        d["mapping"] = list(self.mapping)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainOptions:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "img_size" in known:
            known["img_size"] = (int(known["img_size"][0]), int(known["img_size"][1]))
        if "mapping" in known:
            known["mapping"] = tuple(known["mapping"])
        return cls(**known)


@dataclass(frozen=True)
class Recipe:
    """A named set of training choices; explicit options override its fields."""

    name: str
    augment: str  # a modeling.augment.AUGMENT_POLICIES name
    crop_cell: int  # 0: whole image
    crop_scale: float  # crop side / stained cell diameter; 0: a fixed share of the image
    crop_jitter: float  # random change of the crop's size and centre while training
    label_smoothing: float
    schedule: str  # "plateau" (ReduceLROnPlateau, the paper's) or "cosine" (warm-up + decay)
    weight_decay: float  # > 0: AdamW
    epochs: int  # the default length; the cosine schedule is fitted to it
    keep: str = "best"  # the saved epoch: "best" by validation loss, or "last"
    balance: bool = False  # a ColorBalance layer: every photo's background to one grey
    stain_norm: bool = False  # a StainNorm layer: every crop's stain to one strength


RECIPES: dict[str, Recipe] = {
    # The reference paper's: Adam, ReduceLROnPlateau, flips and rotations, whole image.
    "paper": Recipe("paper", "paper", 0, 0.0, 0.0, 0.0, "plateau", 0.0, 30, "best"),
    # From scratch on a CPU: find the cell and crop around it, augment the way the data
    # varies (shear, shifts, contrast stretch, stain colour), smooth labels, cosine decay.
    # The crop is sized to the cell (1.9 stained diameters), so framing and magnification
    # do not change what the network sees. The schedule sets the end, so there is no
    # early stop and the last epoch is kept: choosing an epoch by validation loss would
    # make the validation figures optimistic (README, Accuracy). All of it is measured.
    "cpu": Recipe("cpu", "strong", 128, 1.9, 0.15, 0.1, "cosine", 1e-4, 8, "last"),
    # For a model that must hold on microscopes it never saw (the `wbc` shipped before
    # the `cpu-balance` one): the background brought to one grey and the stain to one
    # strength inside the model, so exported models carry both, and augmentation over
    # the whole range seen between labs (framing, resolution, stain, light, tone, noise).
    # A 96-pixel crop: cells of other labs are often photographed at lower resolution
    # than the training data.
    # Measured in README, Accuracy (cross-domain).
    "domain": Recipe("domain", "domain", 96, 1.9, 0.15, 0.1, "cosine", 1e-4, 8, "last",
                     balance=True, stain_norm=True),
}
# `cpu`'s with the background balance alone: the one normalisation that holds a shifted
# background without costing the other lab (the stain normalisation did); the shipped
# `wbc`'s. Derived from `cpu`, so it follows that recipe. Measured in README, Accuracy.
RECIPES["cpu-balance"] = replace(RECIPES["cpu"], name="cpu-balance", balance=True)


@dataclass(frozen=True)
class TrainPlan:
    """Checked options with every choice made: what a run actually does."""

    options: TrainOptions  # with backbone, epochs and keep resolved (saved for --resume)
    recipe: Recipe
    weights: str | None  # "imagenet", None (from scratch) or an absolute file path


DEFAULT_BACKBONE = "inceptionresnetv2"  # the reference paper's


def with_backbone(opts: TrainOptions) -> TrainOptions:
    """`auto` is the backbone of the run or shipped model --weights starts from (so
    `--weights wbc` needs no --backbone), and the paper's InceptionResNetV2 otherwise."""
    if (opts.backbone or "auto").strip().lower() != "auto":
        return opts
    return replace(opts, backbone=source_backbone(opts.weights) or DEFAULT_BACKBONE)


def new_run_dir(backbone: str | None = None, prefix: str | None = None) -> Path:
    """The default folder of a new run, runs/[PREFIX-]YYYYmmdd-HHMMSS[-BACKBONE] (train:
    no prefix; cv: "cv"; audit's own cv: "audit-cv"): one format, so runs sort by start."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "-".join(part for part in (prefix, stamp, backbone) if part)


NO_VAL = "none"  # --val none: no validation part, a fixed schedule (few-shot adaptation)


def has_val(opts: TrainOptions) -> bool:
    return str(opts.val_csv).strip().lower() != NO_VAL


def choose(value: str, choices: tuple[str, ...], option: str) -> str:
    """`value` as the registry spells it; `option` is the parameter the value came in."""
    key = (value or "").strip().lower()
    if key not in choices:
        raise ParameterError(option, f"unknown {opt(option)} {value!r}; choose one of "
                                     f"{', '.join(choices)}")
    return key


def resolve_recipe(opts: TrainOptions) -> Recipe:
    """`auto` is `cpu` for the from-scratch `compact` backbone and `paper` otherwise;
    a run started from another run or shipped model keeps that one's recipe."""
    opts = with_backbone(opts)
    name = (opts.recipe or "auto").strip().lower()
    if name == "auto":  # read the source's leuko.json once, only when it decides
        source_recipe = str(source_meta(opts.weights).get("recipe") or "")
        if source_recipe in RECIPES:
            name = source_recipe
    if name == "auto":
        name = "cpu" if get_backbone_spec(opts.backbone).name == "compact" else "paper"
    name = choose(name, ("auto", *RECIPES), "recipe")
    base = RECIPES[name]
    keep = base.keep if opts.keep is None else choose(opts.keep, KEEP, "keep")
    if not has_val(opts):
        if keep == "best":
            if opts.keep is not None:
                raise ParameterError(
                    "keep", f"{opt('keep', 'best')} chooses an epoch by validation loss; with "
                    f"{opt('val', NO_VAL)} the last epoch is kept ({opt('keep', 'last')})")
            keep = "last"
    return replace(
        base,
        crop_cell=base.crop_cell if opts.crop_cell is None else int(opts.crop_cell),
        crop_scale=base.crop_scale if opts.crop_scale is None else float(opts.crop_scale),
        label_smoothing=float(
            base.label_smoothing if opts.label_smoothing is None else opts.label_smoothing
        ),
        epochs=base.epochs if opts.epochs is None else int(opts.epochs),
        keep=keep,
    )


def _check_numbers(opts: TrainOptions, recipe: Recipe) -> None:
    if recipe.crop_cell < 0:
        raise ParameterError("crop_cell", f"{opt('crop_cell')} must be 0 (off) or a crop size "
                                          f"(got {recipe.crop_cell})")
    if not 0.0 <= recipe.crop_scale <= 10.0:
        raise ParameterError(
            "crop_scale", f"{opt('crop_scale')} must be 0 (a fixed share of the image) or a "
            f"multiple of the cell's diameter up to 10 (got {recipe.crop_scale})"
        )
    if not 0.0 <= recipe.label_smoothing < 1.0:
        raise ParameterError("label_smoothing", f"{opt('label_smoothing')} must be in [0, 1) "
                                                f"(got {recipe.label_smoothing})")
    check_batch(opts.batch)
    if recipe.epochs < 1:
        raise ParameterError("epochs", f"{opt('epochs')} must be at least 1 (got {recipe.epochs})")
    if not (opts.lr > 0 and math.isfinite(opts.lr)):
        raise ParameterError("lr", f"{opt('lr')} must be a positive number (got {opts.lr})")
    if opts.unfreeze < 0:
        raise ParameterError("unfreeze", f"{opt('unfreeze')} must be 0 (all) or a positive "
                                         f"layer count (got {opts.unfreeze})")
    if opts.patience < 1:
        raise ParameterError("patience",
                             f"{opt('patience')} must be at least 1 (got {opts.patience})")


# Bytes one training image costs, roughly: its decoded, float, augmented and prefetched
# copies (per input pixel), and the activations kept for the backward pass (per pixel the
# backbone sees; leuko's compact CNN against the keras.applications networks).
_INPUT_BYTES = 120
_ACTIVATION_BYTES = {"compact": 600}
_ACTIVATION_BYTES_APPLICATIONS = 4000


def available_memory() -> int | None:
    """Bytes the machine can still give (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def check_batch_memory(opts: TrainOptions, recipe: Recipe, spec_name: str) -> None:
    """Refuse an input size and batch whose one batch would not fit in memory, before
    anything is written (TensorFlow would run out of memory after leuko.json exists)."""
    h, w = opts.img_size
    seen = recipe.crop_cell * recipe.crop_cell if recipe.crop_cell else h * w
    per_image = h * w * _INPUT_BYTES + seen * _ACTIVATION_BYTES.get(
        spec_name, _ACTIVATION_BYTES_APPLICATIONS)
    need = opts.batch * per_image
    free = available_memory()
    if free is not None and need > 0.8 * free:
        raise ParameterError(
            "batch", f"{opt('img_size', f'{h}x{w}')} with {opt('batch', opts.batch)} needs "
            f"about {need / 2**30:,.1f} GB for one batch, more than the {free / 2**30:.1f} GB "
            f"this machine has free; use a smaller {opt('img_size')} or {opt('batch')}")


def _crop_of_source(opts: TrainOptions, recipe: Recipe, source: dict[str, Any]) -> Recipe:
    """A run started from another run's (or a shipped) backbone crops cells as it did,
    unless --crop-cell / --crop-scale say otherwise: the backbone learned cells at that
    size."""
    if opts.crop_cell is None and source.get("crop_cell") is not None:
        recipe = replace(recipe, crop_cell=int(source["crop_cell"]))
    if opts.crop_scale is None and "crop_scale" in source:
        recipe = replace(recipe, crop_scale=float(source["crop_scale"] or 0.0))
    # the backbone learned balanced, stain-normalised crops: it keeps seeing them
    if source.get("balance"):
        recipe = replace(recipe, balance=True)
    if source.get("stain_norm"):
        recipe = replace(recipe, stain_norm=True)
    return recipe


def resolve(opts: TrainOptions) -> TrainPlan:
    """Check every option (no files read, no TensorFlow) and make the recipe's choices."""
    opts = with_backbone(opts)
    spec = get_backbone_spec(opts.backbone)
    recipe = resolve_recipe(opts)
    _check_numbers(opts, recipe)
    check_input_size(spec, opts.img_size)
    if recipe.crop_cell:
        check_input_size(spec, (recipe.crop_cell, recipe.crop_cell))
    choose(opts.class_weights, CLASS_WEIGHTS, "class_weights")
    parse_renames(opts.mapping)
    choose(opts.precision, PRECISIONS, "precision")
    choose(opts.strategy, STRATEGIES, "strategy")
    weights = resolve_weights(spec, opts.weights)
    recipe = _crop_of_source(opts, recipe, weights_source(weights))
    check_batch_memory(opts, recipe, spec.name)
    # saved with the run, so --resume plans the same length and keeps the same epoch
    resolved = replace(opts, backbone=spec.name, epochs=recipe.epochs, keep=recipe.keep)
    return TrainPlan(resolved, recipe, weights)
