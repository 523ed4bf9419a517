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
_SWAPS = np.array([swaps_axes(k) for k in range(N_TRANSFORMS)])


def segments(threshold: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Split 64 bits into m (start, width) segments, and the m radii they may share.

    Wide segments (up to 22 bits, three for the default threshold 10) with radius <= 3:
    smear hashes crowd into a small part of the 64-bit space, so 16-bit segments put a
    seventh of all pairs in one bucket hit and the bucket hits, not the probes, grew as
    N squared (57 M hits for 0.9 M candidates at 10,000 images; three segments: 3.7 M).
    The radii need only sum to threshold + 1 - m, not m * (threshold // m): if every
    segment differed by more than its radius r_s, the hashes would differ by at least
    sum(r_s + 1) > threshold bits (generalised pigeonhole). At 10 that is 3, 3, 2.
    """
    m = threshold + 1 if threshold <= 3 else max(3, math.ceil((threshold + 1) / 4))
    bounds = [round(64 * s / m) for s in range(m + 1)]
    low, extra = divmod(threshold + 1 - m, m)
    radii = [low + 1] * extra + [low] * (m - extra)
    return [(bounds[s], bounds[s + 1] - bounds[s]) for s in range(m)], radii


def assign_radii(base: np.ndarray, segs: list[tuple[int, int]], radii: list[int]) -> list[int]:
    """segments' radii dealt to the segments, the smallest to the most crowded one.

    Any deal keeps the guarantee; the bucket hits of a crowded segment (many images
    per key, counted as the sum of squared bucket sizes) grow fastest with its radius
    (at 30,000 smears: 129 M hits with radii 3, 3, 3, 89 M with 2 on the crowded one).
    """
    crowd = []
    for start, width in segs:
        keys = (base >> np.uint64(start)) & np.uint64((1 << width) - 1)
        counts = np.unique(keys, return_counts=True)[1].astype(np.int64)
        crowd.append(int((counts * counts).sum()))
    out = [0] * len(segs)
    ranked = sorted(range(len(segs)), key=lambda s: (-crowd[s], s))
    for s, radius in zip(ranked, sorted(radii), strict=True):
        out[s] = radius
    return out


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
        self.order = np.argsort(keys, kind="stable")
        self.sorted_base = base[self.order]  # read in bucket order while expanding hits
        if self.dense:
            ikeys = keys.astype(np.int64)
            self.counts = np.bincount(ikeys, minlength=1 << width).astype(np.int64)
            self.first = np.cumsum(self.counts) - self.counts
            self.full = self.counts > 0
            self.imasks = self.masks.astype(np.int64)
        else:
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
    pair are probed (the median threshold of pHash is not equivariant), and a pair near
    in both comes once. With `log_aspect`, quarter turns are skipped when no image could
    match another's turned shape. Memory stays bounded by `chunk`: the caller filters
    each block as it comes.
    """
    n = len(hashes)
    segs, radii, order = _layout(hashes[:, 0], threshold)
    hashes = permute_bits(hashes, order)
    cols = [np.ascontiguousarray(hashes[:, k]) for k in range(hashes.shape[1])]
    base = cols[0]  # columns apart: a random read touches one hash, not a 64-byte row
    ks = usable_transforms(hashes.shape[1], log_aspect)
    earlier: list[tuple[np.uint64, int]] = []
    for (start, width), radius in zip(segs, radii, strict=True):
        index = SegmentIndex(base, start, width, radius)
        rows = _probe_rows(chunk, len(index.masks))
        for k in ks:
            back = cols[_INVERSE[k]] if _INVERSE[k] in ks else None
            job = _Pass(cols[k], base, k, threshold, list(earlier), back)
            qkeys = index.keys(cols[k])
            for a in range(0, n, rows):
                if on_step is not None:
                    on_step()
                hits = index.probe(qkeys[a : a + rows], a)
                if len(hits.rows) == 0:
                    continue
                for part in _pieces(hits.sizes):
                    found = _expand(index, job, hits, part)
                    if found is not None:
                        yield found
        earlier.append((np.uint64(((1 << width) - 1) << start), radius))


def _layout(
    base: np.ndarray, threshold: int
) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
    """The segments, each one's radius and the bit order for these untransformed hashes."""
    segs, radii = segments(threshold)
    order = balanced_bits(base, segs)
    return segs, assign_radii(permute_bits(base, order), segs, radii), order


@dataclass
class _Pass:
    """One transform's probes through one segment: what _expand needs besides the hits."""

    query: np.ndarray  # hashes under transform k, bits permuted
    base: np.ndarray  # untransformed hashes, bits permuted
    k: int
    threshold: int
    earlier: list[tuple[np.uint64, int]]  # (mask, radius) of the segments already done
    back: np.ndarray | None  # hashes under the inverse transform, when it is probed too


def _bits(x: np.ndarray) -> np.ndarray:
    """popcount(x), without its int64 copy when numpy can (uint8: a quarter of the bytes)."""
    return np.bitwise_count(x) if hasattr(np, "bitwise_count") else popcount(x)


def _expand(index: SegmentIndex, job: _Pass, hits: _Hits, part: slice) -> np.ndarray | None:
    """Candidate rows of one piece of bucket hits, or None when none is near enough.

    Per hit only the base hashes in bucket order are read (a sequential gather); the
    image numbers are looked up for the few near ones. A pair near in both directions
    is kept from its lower image only: from the higher one it would be the same row.
    """
    sizes = hits.sizes[part]
    ends = np.cumsum(sizes)
    # position in `order`: the bucket's start plus the rank within the bucket
    pos = np.repeat(hits.starts[part] - (ends - sizes), sizes)
    pos += np.arange(len(pos))  # int64 (intp): numpy gathers convert other index types first
    rows = hits.rows[part]
    x = np.repeat(job.query[rows], sizes)
    x ^= np.take(index.sorted_base, pos)
    near = np.flatnonzero(_bits(x) <= job.threshold)
    x = x[near]  # the few near ones only: was the pair found through an earlier segment?
    keep = np.ones(len(near), dtype=bool)
    for mask, radius in job.earlier:
        keep &= _bits(x & mask) > radius
    near, x = near[keep], x[keep]
    i = rows[np.searchsorted(ends, near, side="right")]
    j = index.order[pos[near]]
    keep = i != j
    if job.back is not None:  # from the higher image: does the lower one find it too?
        again = _bits(job.back[j] ^ job.base[i]) <= job.threshold
        keep &= (i < j) | ~again
    i, j = i[keep], j[keep]
    if len(i) == 0:
        return None
    out = np.empty((len(i), 4), dtype=np.int64)
    swap = i > j  # store as i < j with the inverse transform
    out[:, 0], out[:, 1] = np.where(swap, j, i), np.where(swap, i, j)
    out[:, 2] = np.where(swap, _INVERSE[job.k], job.k)
    out[:, 3] = _bits(x[keep])
    return out


def count_steps(
    hashes: np.ndarray, threshold: int, log_aspect: np.ndarray | None = None, chunk: int = 4096
) -> int:
    """How many times iter_candidates calls on_step (for a progress bar)."""
    ks = usable_transforms(hashes.shape[1], log_aspect)
    segs, radii, _order = _layout(hashes[:, 0], threshold)
    steps = 0
    for (_start, width), radius in zip(segs, radii, strict=True):
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
    turned = _SWAPS[cand[:, 2]]  # a table, not np.isin: tens of millions of rows
    if not turned.any() and np.ptp(log_aspect) <= ASPECT_TOLERANCE:
        return cand  # all shapes alike: |a_i - a_j| <= max - min, in floats too (monotone)
    ai = log_aspect[cand[:, 0]]
    ai = np.where(turned, -ai, ai)
    return cand[np.abs(ai - log_aspect[cand[:, 1]]) <= ASPECT_TOLERANCE]
