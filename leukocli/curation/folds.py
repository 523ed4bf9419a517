"""Grouped, stratified k-fold assignment: every group in exactly one fold.

scikit-learn's StratifiedGroupKFold keeps each group (source photo, patient, slide)
whole and the class shares of the folds close to the whole's, so each held-out fold is
an honest test of cells the fold's model never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError, opt


def check_folds(folds: int, fold: int | None = None) -> None:
    """The one check of --folds and --fold."""
    if folds < 2:
        raise ParameterError("folds", f"{opt('folds')} must be at least 2 (got {folds})")
    if fold is not None and not 0 <= fold < folds:
        raise ParameterError("fold", f"{opt('fold')} must be between 0 and {folds - 1} "
                                     f"(got {fold})")


def assign_folds(
    labels: Sequence[str], groups: Sequence[str], folds: int = 5, seed: int = 42
) -> np.ndarray:
    """The fold (0..folds-1) of every image; a group spanning labels goes by its majority."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    check_folds(folds)
    if len(labels) != len(groups):
        raise ValueError("labels and groups differ in length")
    n_groups = len(set(groups))
    if n_groups < folds:
        raise ParameterError(
            "folds", f"{folds} folds need at least {folds} groups, but the data holds "
            f"{n_groups}; use fewer {opt('folds')} or a finer {opt('group_by')}"
        )
    out = np.full(len(labels), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members": reported below
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held_out) in enumerate(
            splitter.split(np.zeros(len(labels)), np.asarray(labels), np.asarray(groups))
        ):
            out[held_out] = k
    return out


def thin_classes(labels: Sequence[str], groups: Sequence[str], folds: int) -> list[str]:
    """Classes with fewer groups than folds: some folds will hold none of them."""
    by_class: dict[str, set[str]] = {}
    for label, group in zip(labels, groups, strict=True):
        by_class.setdefault(label, set()).add(group)
    return sorted(c for c, gs in by_class.items() if len(gs) < folds)
