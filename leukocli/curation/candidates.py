"""Near-duplicate candidates: multi-index hashing over pHash segments, then pixel checks.

Pigeonhole: two 64-bit hashes within Hamming distance t agree to within t // m bits on
at least one of m segments. Each segment of the untransformed hashes is bucketed; every
transformed hash probes the buckets within the segment radius. The cost grows with the
number of near pairs, not with N squared. A hash only proposes a pair; `pixelcheck`
decides on pixels, because stained smears all look alike to a hash.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .._util.bits import popcount
from .hashing import N_TRANSFORMS, swaps_axes

MAX_ROWS = 1 << 19  # bucket hits expanded at once while matching hashes (bounds memory)
PROBES = 1 << 21  # bucket probes made at once (a 22-bit radius-3 probe is 1,794 keys)
ASPECT_TOLERANCE = 0.05  # |log(aspect ratio)| difference allowed between copies
_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # inverse of each dihedral transform
_DENSE_WIDTH = 22  # segments up to this many bits are bucketed in a flat count table


def segments(threshold: int) -> tuple[list[tuple[int, int]], int]:
    """Split 64 bits into m (start, width) segments and a per-segment radius threshold // m.

    Wide segments (up to 22 bits, three for the default threshold 10) with radius <= 3:
    smear hashes crowd into a small part of the 64-bit space, so 16-bit segments put a
    seventh of all pairs in one bucket hit and the bucket hits, not the probes, grew as
    N squared (57 M hits for 0.9 M candidates at 10,000 images; three segments: 3.7 M).
    """
    m = threshold + 1 if threshold <= 3 else max(3, math.ceil((threshold + 1) / 4))
    bounds = [round(64 * s / m) for s in range(m + 1)]
    return [(bounds[s], bounds[s + 1] - bounds[s]) for s in range(m)], threshold // m


def flip_masks(width: int, radius: int) -> np.ndarray:
    """All width-bit values with at most `radius` bits set: the probes around a key."""
    masks = [sum(1 << a for a in bits) for r in range(radius + 1)
             for bits in itertools.combinations(range(width), r)]
    return np.array(masks, dtype=np.uint64)


def balanced_bits(base: np.ndarray, segs: list[tuple[int, int]]) -> np.ndarray:
    """A bit order (new position -> old bit) that deals each segment bits of alike entropy.

    pHash bits of smears are far from fair (some are nearly always 0), and a segment
    made of such bits is one huge bucket. Any split of the 64 bits into segments keeps
    the pigeonhole guarantee, so the bits are dealt by entropy, most informative first,
    in a snake over the segments.
    """
    ones = np.array([np.count_nonzero((base >> np.uint64(b)) & np.uint64(1)) for b in range(64)])
    p = ones / max(len(base), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nan_to_num(p * np.log2(p)) - np.nan_to_num((1 - p) * np.log2(1 - p))
    free = [list(range(start, start + width)) for start, width in segs]
    order = np.empty(64, dtype=np.int64)
    s, step = 0, 1
    for b in np.argsort(-ent, kind="stable").tolist():
        while not free[s]:
            s, step = _snake(s, step, len(segs))
        order[free[s].pop(0)] = b
        s, step = _snake(s, step, len(segs))
    return order


def _snake(s: int, step: int, m: int) -> tuple[int, int]:
    """The next segment of a 0, 1, .., m-1, m-1, .., 0, 0, 1, .. deal."""
    if 0 <= s + step < m:
        return s + step, step
    return s, -step


def permute_bits(hashes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """hashes with bit `order[p]` moved to position p (Hamming distances unchanged)."""
    out = np.zeros_like(hashes)
    one = np.uint64(1)
    for pos, b in enumerate(order.tolist()):
        out |= ((hashes >> np.uint64(b)) & one) << np.uint64(pos)
    return out


@dataclass
class _Hits:
    """Bucket hits of one chunk of probes: probe row, bucket size and bucket start."""

    rows: np.ndarray
    sizes: np.ndarray
    starts: np.ndarray


class SegmentIndex:
    """Images bucketed by one segment of their untransformed hash."""

    def __init__(self, base: np.ndarray, start: int, width: int, radius: int) -> None:
        self.start = np.uint64(start)
        self.wmask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(2**64 - 1)
        self.masks = flip_masks(width, radius)
        self.dense = width <= _DENSE_WIDTH
        keys = self.keys(base)
        if self.dense:
            ikeys = keys.astype(np.int64)
            self.counts = np.bincount(ikeys, minlength=1 << width).astype(np.int64)
            self.first = np.cumsum(self.counts) - self.counts
            self.order = np.argsort(ikeys, kind="stable")
            self.full = self.counts > 0
            self.imasks = self.masks.astype(np.int64)
        else:
            self.order = np.argsort(keys, kind="stable")
            self.sorted_keys = keys[self.order]

    def keys(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes >> self.start) & self.wmask

    def probe(self, qkeys: np.ndarray, offset: int) -> _Hits:
        """Every non-empty bucket within the radius of each query key."""
        n_masks = len(self.masks)
        if self.dense:  # a byte table of full buckets first: most probes miss
            probes = (qkeys.astype(np.int64)[:, None] ^ self.imasks[None, :]).ravel()
            hit = np.flatnonzero(np.take(self.full, probes))
            keys = probes[hit]
            return _Hits(offset + hit // n_masks, self.counts[keys], self.first[keys])
        probes = (qkeys[:, None] ^ self.masks[None, :]).ravel()
        lo = np.searchsorted(self.sorted_keys, probes, side="left")
        sizes = np.searchsorted(self.sorted_keys, probes, side="right") - lo
        hit = np.flatnonzero(sizes)
        return _Hits(offset + hit // n_masks, sizes[hit], lo[hit])


def _pieces(sizes: np.ndarray) -> Iterator[slice]:
    """Slices of the hits whose expansion stays near MAX_ROWS rows (bounded memory)."""
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, np.arange(MAX_ROWS, int(ends[-1]), MAX_ROWS)) + 1
    bounds = [0, *cuts.tolist(), len(sizes)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi > lo:
            yield slice(lo, hi)


def usable_transforms(n_transforms: int, log_aspect: np.ndarray | None) -> list[int]:
    """Transforms worth probing: quarter turns only when some turned shape can match."""
    return [
        k for k in range(n_transforms) if not (swaps_axes(k) and no_turned_match(log_aspect))
    ]


def iter_candidates(
    hashes: np.ndarray,
    threshold: int,
    log_aspect: np.ndarray | None = None,
    chunk: int = 4096,
    on_step: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield (P, 4) int64 rows (i, j, k, distance), i < j, hamming(hash_k(i), hash_0(j)) <= t.

    hashes is (N, K): column k holds the hash of image transform k. Both directions of a
    pair are probed (the median threshold of pHash is not equivariant), so a row may
    come twice. With `log_aspect`, quarter turns are skipped when no image could match
    another's turned shape. Memory stays bounded by `chunk`: the caller filters each
    block as it comes.
    """
    n = len(hashes)
    segs, radius = segments(threshold)
    hashes = permute_bits(hashes, balanced_bits(hashes[:, 0], segs))
    base = hashes[:, 0]
    earlier: list[np.uint64] = []
    for start, width in segs:
        index = SegmentIndex(base, start, width, radius)
        rows = _probe_rows(chunk, len(index.masks))
        for k in usable_transforms(hashes.shape[1], log_aspect):
            qkeys = index.keys(hashes[:, k])
            for a in range(0, n, rows):
                if on_step is not None:
                    on_step()
                hits = index.probe(qkeys[a : a + rows], a)
                if len(hits.rows) == 0:
                    continue
                for part in _pieces(hits.sizes):
                    found = _expand(hashes, index.order, hits, part, k, threshold, radius, earlier)
                    if found is not None:
                        yield found
        earlier.append(np.uint64(((1 << width) - 1) << start))


def _expand(
    hashes: np.ndarray,
    order: np.ndarray,
    hits: _Hits,
    part: slice,
    k: int,
    threshold: int,
    radius: int,
    earlier: list[np.uint64],
) -> np.ndarray | None:
    """Candidate rows of one piece of bucket hits, or None when none is near enough."""
    sizes = hits.sizes[part]
    total = int(sizes.sum())
    i = np.repeat(hits.rows[part], sizes)
    # position in `order`: the bucket's start plus the rank within the bucket
    j = order[np.arange(total) + np.repeat(hits.starts[part] - (np.cumsum(sizes) - sizes), sizes)]
    x = hashes[:, k][i] ^ hashes[:, 0][j]
    d = popcount(x)
    near = np.flatnonzero((d <= threshold) & (i != j))
    x = x[near]  # the few near ones only: was the pair found through an earlier segment?
    keep = np.ones(len(near), dtype=bool)
    for mask in earlier:
        keep &= popcount(x & mask) > radius
    near = near[keep]
    i, j, d = i[near], j[near], d[near]
    if len(i) == 0:
        return None
    kk = np.full(len(i), k, dtype=np.int64)
    swap = i > j  # store as i < j with the inverse transform
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    kk[swap] = _INVERSE[k]
    return np.stack([i, j, kk, d], axis=1).astype(np.int64)


def count_steps(
    hashes: np.ndarray, threshold: int, log_aspect: np.ndarray | None = None, chunk: int = 4096
) -> int:
    """How many times iter_candidates calls on_step (for a progress bar)."""
    ks = usable_transforms(hashes.shape[1], log_aspect)
    segs, radius = segments(threshold)
    steps = 0
    for _start, width in segs:
        steps += math.ceil(len(hashes) / _probe_rows(chunk, len(flip_masks(width, radius))))
    return steps * len(ks)


def _probe_rows(chunk: int, n_masks: int) -> int:
    """Query rows probed at once: at most `chunk`, and about PROBES probes (memory)."""
    return max(64, min(chunk, PROBES // n_masks))


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """Candidate rows without repeats of the same (i, j, k)."""
    if len(rows) == 0:
        return rows
    n = int(rows[:, :2].max()) + 1
    key = (rows[:, 0] * n + rows[:, 1]) * N_TRANSFORMS + rows[:, 2]
    _, idx = np.unique(key, return_index=True)
    return rows[idx]


def no_turned_match(log_aspect: np.ndarray | None) -> bool:
    """True when no image turned a quarter has the shape of any image (within tolerance)."""
    if log_aspect is None or len(log_aspect) == 0:
        return False
    ref = np.concatenate([[-np.inf], np.sort(log_aspect), [np.inf]])
    turned = -log_aspect
    pos = np.searchsorted(ref, turned)  # ref[pos - 1] <= turned < ref[pos]
    gap = np.minimum(ref[pos] - turned, turned - ref[pos - 1])
    return bool(gap.min() > ASPECT_TOLERANCE)


def aspect_filter(cand: np.ndarray, log_aspect: np.ndarray) -> np.ndarray:
    """Drop candidates whose shapes cannot match under their transform (a quarter turn
    swaps height and width; a resize keeps the ratio)."""
    if len(cand) == 0:
        return cand
    ai = log_aspect[cand[:, 0]]
    ai = np.where(np.isin(cand[:, 2], [k for k in range(8) if swaps_axes(k)]), -ai, ai)
    return cand[np.abs(ai - log_aspect[cand[:, 1]]) <= ASPECT_TOLERANCE]
