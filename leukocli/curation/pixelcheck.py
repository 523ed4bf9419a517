"""Pixel checks of hash candidates: a cheap bound, the 16x16 check and the 48x48 one.

A hash only proposes a pair (`candidates`): on stained smears (a pink field and one
purple blob) short hashes of different cells collide, so pixels decide. The checks
run from cheap to dear, and each passes only what the next must see.
"""

from __future__ import annotations

import numpy as np

from .._util.progress import SILENT, Reporter
from .hashing import N_TRANSFORMS, correlation, dihedral, fine_features

BOUND_DIMS = 32  # dimensions of CoarseBound's projection
BOUND_SLACK = 0.5  # of a 256-term dot product of unit-RMS features: float32 rounding is ~1e-3


def coarse_check(coarse: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """16x16 high-pass correlation of each candidate (i, j, k): image i under k vs j."""
    sims = np.zeros(len(cand), dtype=np.float32)
    for k, s in by_transform(cand):
        a = np.ascontiguousarray(dihedral(coarse[cand[s, 0]], k, axes=(1, 2)))
        sims[s] = correlation(a, coarse[cand[s, 1]])
    return sims


def by_transform(cand: np.ndarray) -> list[tuple[int, slice | np.ndarray]]:
    """The rows of each transform in `cand`; all rows as a slice when only one occurs
    (the common case: a block of candidates mostly comes from one transform's probes)."""
    ks = np.flatnonzero(np.bincount(cand[:, 2], minlength=N_TRANSFORMS)).tolist()
    if len(ks) == 1:
        return [(ks[0], slice(None))]
    return [(k, np.flatnonzero(cand[:, 2] == k)) for k in ks]


class CoarseBound:
    """An upper bound of `coarse_check`, from a few dimensions: a cheap proof that a pair
    cannot pass, so that only the few that may go to the full 16x16 check.

    With a_P, b_P the projections on an orthonormal basis P and a_R, b_R the rest,
    a . b = a_P . b_P + a_R . b_R <= a_P . b_P + |a_R| |b_R| (Cauchy-Schwarz), for any P.
    P spans the main directions of the features (over every transform, from a sample
    of images), where most of a pair's difference shows. A hash proposes pairs as N
    squared on copies of one photo (all smears hash alike); the bound rejects most.
    """

    def __init__(self, coarse: np.ndarray, ks: list[int], dims: int = BOUND_DIMS) -> None:
        n = len(coarse)
        self.size = int(np.prod(coarse.shape[1:]))
        sample = coarse[:: max(1, n // 4096)]
        rows = np.concatenate([_flat(dihedral(sample, k, axes=(1, 2)))
                               for k in range(N_TRANSFORMS)])
        _, vecs = np.linalg.eigh(rows.T @ rows)
        basis = vecs[:, ::-1][:, : min(dims, self.size)]
        self.proj: dict[int, np.ndarray] = {}
        self.rest: dict[int, np.ndarray] = {}
        for k in sorted({0, *ks}):
            proj, rest = [], []
            for a in range(0, n, 8192):  # in slices: float64 copies of all features are large
                x = _flat(dihedral(coarse[a : a + 8192], k, axes=(1, 2)))
                y = x @ basis
                proj.append(y.astype(np.float32))
                rest.append(np.sqrt(np.maximum((x * x).sum(1) - (y * y).sum(1), 0.0)))
            self.proj[k] = np.concatenate(proj)
            self.rest[k] = np.concatenate(rest).astype(np.float32)

    def may_pass(self, cand: np.ndarray, minimum: float) -> np.ndarray:
        """False where coarse_check(cand) < minimum for certain (float slack included)."""
        ok = np.zeros(len(cand), dtype=bool)
        for k, s in by_transform(cand):
            i, j = cand[s, 0], cand[s, 1]
            # float32 throughout: 33 terms of at most 256 err by < 1e-3, far below the slack
            top = np.einsum("ij,ij->i", self.proj[k][i], self.proj[0][j])
            top += self.rest[k][i] * self.rest[0][j]
            ok[s] = top >= minimum * self.size - BOUND_SLACK
        return ok


def _flat(features: np.ndarray) -> np.ndarray:
    return features.reshape(len(features), -1).astype(np.float64)


def fine_check(
    thumbs: np.ndarray, cand: np.ndarray, chunk: int = 1024, reporter: Reporter = SILENT
) -> np.ndarray:
    """48x48 colour high-pass correlation of each candidate under its transform."""
    sims = np.zeros(len(cand), dtype=np.float32)
    with reporter.task("verifying pixels", len(cand)) as advance:
        for a in range(0, len(cand), chunk):
            part = cand[a : a + chunk]
            fi = fine_features(thumbs[part[:, 0]])
            fj = fine_features(thumbs[part[:, 1]])
            for k in np.unique(part[:, 2]).tolist():
                m = part[:, 2] == k
                sims[a + np.nonzero(m)[0]] = correlation(
                    np.ascontiguousarray(dihedral(fi[m], k, axes=(1, 2))), fj[m]
                )
            advance(len(part))
    return sims
