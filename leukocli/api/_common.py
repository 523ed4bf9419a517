"""What the API's modules share: path types, the default model, the training defaults
and how keyword options become the core's (the command line's) forms."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..training.options import NO_VAL, TrainOptions

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike]
DEFAULT_MODEL = "runs/latest"
DEFAULTS = TrainOptions()  # the one place training defaults live


def as_list(paths: Paths) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def map_items(mapping: Mapping[str, str] | None) -> tuple[str, ...]:
    """A {OLD: NEW} dict as the OLD=NEW items the core's --map parser checks."""
    return tuple(f"{old}={new}" for old, new in (mapping or {}).items())


def train_options(train: PathLike, val: PathLike, mapping: Mapping[str, str] | None,
             **fields: Any) -> TrainOptions:
    """TrainOptions as the command line builds them: paths absolute, `val` may be "none"."""
    def absolute(p: PathLike) -> str:
        return str(Path(p).expanduser().absolute())

    if "img_size" in fields:
        fields["img_size"] = tuple(fields["img_size"])
    if fields.get("relabel") is not None:  # a corrections CSV, found from any directory
        fields["relabel"] = absolute(fields["relabel"])
    no_val = str(val).strip().lower() == NO_VAL
    return TrainOptions(train_csv=absolute(train), val_csv=NO_VAL if no_val else absolute(val),
                        mapping=map_items(mapping), **fields)



def cv_options(mapping: Mapping[str, str] | None, **fields: Any) -> TrainOptions:
    """The training options of a cross-validation (it makes its own train and val parts)."""
    return train_options(DEFAULTS.train_csv, DEFAULTS.val_csv, mapping, **fields)
