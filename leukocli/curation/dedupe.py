"""Exact and near-duplicate images, label conflicts, name collisions; quarantine and undo.

Identity comes from content, never from file names: the reference paper flattened the
class folders and lost every picture whose name clashed. The search is

1. one decode per image (thread pool, JPEG draft mode): sha256 of the bytes, a 48x48
   thumbnail and the 64-bit DCT pHash of its eight flips/quarter turns;
2. candidate pairs from a multi-index over hash segments (pigeonhole: a pair within
   Hamming distance t agrees to within t // m bits on one of m segments), so the cost
   grows with the number of near pairs, not with N squared;
3. confirmation of every candidate on pixels under the matched transform: correlation of
   high-pass, per-channel standardised thumbnails (a cheap 16x16 pass, then 48x48 colour).
   Stained smears all look alike to a hash; only true copies survive this;
4. union-find into groups: `exact` when every member has the same bytes or decoded
   pixels, else `near`. A group with several labels is a conflict and keeps nothing.

`--apply` never deletes: it moves files into a quarantine folder and writes every move
to a JSON-lines manifest before making it, so `--undo MANIFEST` can always put them back.

Exit codes: 0 when the scan (and any apply/undo) ran; findings and unreadable images are
reported, not failures. 1 (EXIT_PARTIAL) when some file could not be moved during apply
or undo. 2 for usage errors.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from .console import console, info, progress_bar, simple_table, warn
from .dataset import Dataset, Record, file_sha256, scan
from .errors import EXIT_PARTIAL, LeukoError
from .hashing import (
    HASH_SIDE,
    N_TRANSFORMS,
    THUMB,
    TRANSFORM_NAMES,
    Fingerprint,
    coarse_features,
    correlation,
    dihedral,
    fine_features,
    fingerprint,
    phash_variants,
    pixel_digest,
    popcount,
    swaps_axes,
)

MAX_THRESHOLD = 32
MAX_ROWS = 1 << 19  # bucket hits expanded at once while matching hashes (bounds memory)
COARSE_MIN = 0.90  # 16x16 high-pass correlation a candidate needs before the fine check
VERIFY_MIN = 0.97  # 48x48 high-pass colour correlation that confirms a near copy
ASPECT_TOLERANCE = 0.05  # |log(aspect ratio)| difference allowed between copies
MANIFEST_VERSION = 1


# --------------------------------------------------------------------------- results
@dataclass
class Group:
    """Files that hold one picture."""

    kind: str  # "exact" or "near"
    files: list[str]
    labels: list[str]  # distinct labels, sorted
    file_labels: list[str]
    conflict: bool
    keep: str | None
    similarity: float  # lowest confirmed pixel correlation inside the group (1.0 for exact)
    transforms: list[str] = field(default_factory=list)  # how near members map onto each other

    @property
    def to_move(self) -> list[str]:
        return [f for f in self.files if f != self.keep]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": self.files,
            "labels": self.labels,
            "file_labels": self.file_labels,
            "conflict": self.conflict,
            "keep": self.keep,
            "similarity": round(self.similarity, 4),
            "transforms": self.transforms,
        }


@dataclass
class Findings:
    """Everything one scan found; `to_dict` is the --report JSON."""

    root: Path
    source: Path
    kind: str
    scanned: int
    unreadable: dict[str, str]
    groups: list[Group]
    name_collisions: list[dict[str, Any]]
    pairs: int  # confirmed near/exact pairs before grouping
    candidates: int  # hash candidate pairs that went to pixel verification
    params: dict[str, Any]
    seconds: float = 0.0

    @property
    def to_quarantine(self) -> list[str]:
        return sorted(f for g in self.groups for f in g.to_move)

    def summary(self) -> dict[str, int]:
        exact = [g for g in self.groups if g.kind == "exact"]
        near = [g for g in self.groups if g.kind == "near"]
        return {
            "scanned": self.scanned,
            "readable": self.scanned - len(self.unreadable),
            "unreadable": len(self.unreadable),
            "exact_groups": len(exact),
            "exact_files": sum(len(g.files) for g in exact),
            "near_groups": len(near),
            "near_files": sum(len(g.files) for g in near),
            "conflict_groups": sum(g.conflict for g in self.groups),
            "conflict_files": sum(len(g.files) for g in self.groups if g.conflict),
            "name_collisions": len(self.name_collisions),
            "to_quarantine": len(self.to_quarantine),
            "pairs": self.pairs,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "source": str(self.source),
            "layout": self.kind,
            "scanned": self.scanned,
            "unreadable": sorted(self.unreadable),
            "unreadable_reasons": dict(sorted(self.unreadable.items())),
            "groups": [g.as_dict() for g in self.groups],
            "name_collisions": self.name_collisions,
            "to_quarantine": self.to_quarantine,
            "summary": self.summary(),
            "parameters": self.params,
            "seconds": round(self.seconds, 2),
        }


# --------------------------------------------------------------------------- search
def find_duplicates(
    data: str | Path | Dataset, threshold: int = 10, transforms: bool = True
) -> Findings:
    """Scan `data` (folder, CSV manifest or a scanned Dataset) and find duplicates.

    >>> f = find_duplicates("dataset")             # doctest: +SKIP
    >>> [g.files for g in f.groups if g.conflict]  # doctest: +SKIP
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise LeukoError(f"--threshold must be between 0 and {MAX_THRESHOLD} (got {threshold})")
    start = time.perf_counter()
    ds = data if isinstance(data, Dataset) else scan(data, check="none")
    unreadable = {p.rel: p.reason for p in ds.problems}
    prints, thumbs, gray = _fingerprint_all([r.path for r in ds.records])
    records: list[Record] = []
    metas: list[_Meta] = []
    for rec, fp in zip(ds.records, prints, strict=True):
        if isinstance(fp, str):
            unreadable[rec.rel] = fp
        else:
            records.append(rec)
            metas.append(fp)
    del prints
    scanned = len(ds.records) + len(ds.problems)
    params = {
        "threshold": threshold,
        "transforms": transforms,
        "coarse_min": COARSE_MIN,
        "verify_min": VERIFY_MIN,
    }
    if not metas:
        return Findings(ds.root, ds.source, ds.kind, scanned, unreadable, [], [], 0, 0, params,
                        time.perf_counter() - start)

    n = len(metas)
    uf = _UnionFind(n)
    best_sim = np.ones(n, dtype=np.float32)  # lowest confirming correlation touching each file

    # exact byte copies need no pixels at all
    shas = [m.sha256 for m in metas]
    first_by_sha: dict[str, int] = {}
    for i, sha in enumerate(shas):
        j = first_by_sha.setdefault(sha, i)
        if j != i:
            uf.union(i, j)

    hashes = np.concatenate(
        [phash_variants(gray[a : a + 4096], transforms) for a in range(0, n, 4096)]
    )
    del gray
    aspect = np.log(np.array([m.height / m.width for m in metas], dtype=np.float64))
    sizes = [m.width * m.height for m in metas]
    # Hash candidates come in blocks and only those that pass the coarse pixel check are
    # kept, so memory stays bounded even when many smears hash alike.
    coarse = np.concatenate([coarse_features(thumbs[a : a + 1024]) for a in range(0, n, 1024)])
    n_cand = 0
    kept: list[np.ndarray] = []
    steps = count_steps(hashes, threshold, aspect)
    with progress_bar("matching hashes", steps) as bar:
        for block in iter_candidates(hashes, threshold, aspect, on_step=bar.advance):
            block = _aspect_filter(block, aspect)
            n_cand += len(block)
            kept.append(block[coarse_check(coarse, block) >= COARSE_MIN])
    del coarse
    cand = _unique_rows(np.concatenate(kept)) if kept else np.zeros((0, 4), dtype=np.int64)
    sims = fine_check(thumbs, cand)
    ok = sims >= VERIFY_MIN
    pairs = cand[ok]
    edge_kinds: dict[int, set[int]] = defaultdict(set)
    for (i, j, k, _d), s in zip(pairs.tolist(), sims[ok].tolist(), strict=True):
        uf.union(i, j)
        edge_kinds[i].add(k)
        best_sim[i] = min(best_sim[i], s)
        best_sim[j] = min(best_sim[j], s)

    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[uf.find(i)].append(i)
    multi = [sorted(m, key=lambda i: records[i].rel) for m in members.values() if len(m) > 1]

    # same decoded pixels in different bytes (PNG vs BMP) still counts as exact
    need_pixels = sorted({i for m in multi if len({shas[i] for i in m}) > 1 for i in m})
    digests = _pixel_digests([records[i].path for i in need_pixels])
    pix = dict(zip(need_pixels, digests, strict=True))

    groups: list[Group] = []
    for m in multi:
        ident = {shas[i] for i in m}
        if len(ident) > 1:
            ident = {pix.get(i) or f"bytes:{shas[i]}" for i in m}
        kind = "exact" if len(ident) == 1 else "near"
        file_labels = [records[i].label for i in m]
        labels = sorted(set(file_labels))
        conflict = len(labels) > 1
        keep = None
        if not conflict:
            keep = records[min(m, key=lambda i: (-sizes[i], records[i].rel))].rel
        sim = 1.0 if kind == "exact" else float(min(best_sim[i] for i in m))
        ks = sorted({k for i in m for k in edge_kinds.get(i, ())}) if kind == "near" else []
        groups.append(
            Group(kind, [records[i].rel for i in m], labels, file_labels, conflict, keep, sim,
                  [TRANSFORM_NAMES[k] for k in ks])
        )
    groups.sort(key=lambda g: (-len(g.files), g.files[0]))

    return Findings(
        ds.root, ds.source, ds.kind, scanned, unreadable, groups,
        name_collisions(records), len(_unique_pairs(pairs)), n_cand, params,
        time.perf_counter() - start,
    )


def _unique_pairs(rows: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in rows[:, :2].tolist()}


def _workers() -> int:
    return min(8, max(4, os.cpu_count() or 4))


@dataclass(frozen=True)
class _Meta:
    sha256: str
    width: int
    height: int


def _fingerprint_all(
    paths: Sequence[Path],
) -> tuple[list[_Meta | str], np.ndarray, np.ndarray]:
    """Fingerprint every path in parallel; thumbnails go straight into preallocated arrays
    (rows of readable images, in order) so peak memory stays ~8 kB per image."""
    out: list[_Meta | str] = []
    thumbs = np.empty((len(paths), THUMB, THUMB, 3), dtype=np.uint8)
    gray = np.empty((len(paths), HASH_SIDE, HASH_SIDE), dtype=np.uint8)
    row = 0
    if paths:
        with progress_bar("hashing images", len(paths)) as bar, \
                ThreadPoolExecutor(_workers()) as pool:
            for fp in _bounded_map(pool, fingerprint, paths):
                if isinstance(fp, Fingerprint):
                    thumbs[row] = fp.thumb
                    gray[row] = fp.gray
                    row += 1
                    out.append(_Meta(fp.sha256, fp.width, fp.height))
                else:
                    out.append(fp)
                bar.advance()
    return out, thumbs[:row], gray[:row]


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Path], Fingerprint | str], items: Sequence[Path],
    window: int = 256,
) -> Iterator[Fingerprint | str]:
    """pool.map in windows: Executor.map submits everything at once, and finished results
    would pile up (thumbnails and all) whenever the consumer falls behind."""
    for a in range(0, len(items), window):
        yield from pool.map(fn, items[a : a + window])


def _pixel_digests(paths: Sequence[Path]) -> list[str | None]:
    if not paths:
        return []
    out: list[str | None] = []
    with progress_bar("comparing pixels", len(paths)) as bar, \
            ThreadPoolExecutor(_workers()) as pool:
        for d in pool.map(pixel_digest, paths):
            out.append(d)
            bar.advance()
    return out


def name_collisions(records: Sequence[Record]) -> list[dict[str, Any]]:
    """File names that occur under more than one label (flattening would lose files)."""
    by_name: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_name[Path(r.rel).name].append(r)
    out = []
    for name in sorted(by_name):
        recs = by_name[name]
        if len({r.label for r in recs}) > 1:
            out.append({
                "name": name,
                "files": sorted(r.rel for r in recs),
                "labels": sorted({r.label for r in recs}),
            })
    return out


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


# --------------------------------------------------------------------------- candidates
def _segments(threshold: int) -> tuple[list[tuple[int, int]], int]:
    """Split 64 bits into m segments and a per-segment radius r = threshold // m.

    Pigeonhole: two hashes within `threshold` bits agree to within r bits on at least one
    segment. Few segments with radius <= 2 keep both the probe count and buckets small.
    """
    m = threshold + 1 if threshold <= 3 else max(4, math.ceil((threshold + 1) / 3))
    bounds = [round(64 * s / m) for s in range(m + 1)]
    return [(bounds[s], bounds[s + 1] - bounds[s]) for s in range(m)], threshold // m


def _masks(width: int, radius: int) -> np.ndarray:
    """All width-bit values with at most `radius` bits set."""
    masks = [0]
    if radius >= 1:
        masks += [1 << a for a in range(width)]
    if radius >= 2:
        masks += [(1 << a) | (1 << b) for a in range(width) for b in range(a + 1, width)]
    return np.array(masks, dtype=np.uint64)


_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # inverse of each dihedral transform


def iter_candidates(
    hashes: np.ndarray,
    threshold: int,
    log_aspect: np.ndarray | None = None,
    chunk: int = 4096,
    on_step: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield (P, 4) int64 rows (i, j, k, distance), i < j, hamming(hash_k(i), hash_0(j)) <= t.

    hashes is (N, K): column k holds the hash of image transform k. Multi-index hashing:
    each segment of the untransformed hashes is bucketed; every transformed hash probes
    the buckets within the segment radius; a pair is reported by the first segment that
    finds it. Both directions of a pair are probed (hamming(hash_k(i), hash_0(j)) and
    hamming(hash_k^-1(j), hash_0(i)) differ: the median threshold is not equivariant),
    so a row may come twice, once per direction. With `log_aspect`, quarter turns are
    skipped when no image could match another's turned shape (e.g. all are landscape).
    Memory stays bounded by `chunk`: the caller filters each block as it comes.
    """
    n, n_k = hashes.shape
    segs, radius = _segments(threshold)
    base = hashes[:, 0]
    ks = [k for k in range(n_k) if not (swaps_axes(k) and _no_turned_match(log_aspect))]
    seg_masks = [_seg_mask(start, width) for start, width in segs]
    for si, (start, width) in enumerate(segs):
        wmask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        keys = (base >> np.uint64(start)) & wmask
        masks = _masks(width, radius)
        dense = width <= 22
        if dense:
            ikeys = keys.astype(np.int64)
            counts = np.bincount(ikeys, minlength=1 << width).astype(np.int64)
            starts = np.cumsum(counts) - counts
            order = np.argsort(ikeys, kind="stable")
            masks_i = masks.astype(np.int64)
        else:
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
        n_masks = len(masks)
        for k in ks:
            qkeys = (hashes[:, k] >> np.uint64(start)) & wmask
            qkeys_i = qkeys.astype(np.int64) if dense else qkeys
            for a in range(0, n, chunk):
                if on_step is not None:
                    on_step()
                b = min(n, a + chunk)
                if dense:
                    q = (qkeys_i[a:b, None] ^ masks_i[None, :]).ravel()
                    c = counts[q]
                    nz = np.flatnonzero(c)
                    c, st = c[nz], starts[q[nz]]
                else:
                    qu = (qkeys[a:b, None] ^ masks[None, :]).ravel()
                    st_all = np.searchsorted(sorted_keys, qu, side="left")
                    c_all = np.searchsorted(sorted_keys, qu, side="right") - st_all
                    nz = np.flatnonzero(c_all)
                    c, st = c_all[nz], st_all[nz]
                if len(nz) == 0:
                    continue
                row = a + nz // n_masks
                # expand bucket hits in pieces of about MAX_ROWS, so a crowded bucket
                # (many smears hash alike) never needs more than a bounded temporary
                ends = np.cumsum(c)
                cuts = np.searchsorted(ends, np.arange(MAX_ROWS, int(ends[-1]), MAX_ROWS))
                for lo, hi in zip(
                    np.concatenate([[0], cuts + 1]), np.concatenate([cuts + 1, [len(c)]]),
                    strict=True,
                ):
                    if hi <= lo:
                        continue
                    yield from _expand(
                        hashes, base, order, row[lo:hi], c[lo:hi], st[lo:hi], k, threshold,
                        radius, seg_masks[:si],
                    )


def _expand(
    hashes: np.ndarray,
    base: np.ndarray,
    order: np.ndarray,
    row: np.ndarray,
    c: np.ndarray,
    st: np.ndarray,
    k: int,
    threshold: int,
    radius: int,
    earlier_masks: list[np.uint64],
) -> Iterator[np.ndarray]:
    """Candidate rows of one piece of bucket hits: query `row` met c entries from st on."""
    total = int(c.sum())
    i = np.repeat(row, c)
    offs = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
    j = order[np.repeat(st, c) + offs]
    x = hashes[i, k] ^ base[j]
    d = popcount(x)
    near = (d <= threshold) & (i != j)
    for earlier in earlier_masks:  # found already by an earlier segment
        near &= popcount(x & earlier) > radius
    i, j, d = i[near], j[near], d[near]
    if len(i) == 0:
        return
    kk = np.full(len(i), k, dtype=np.int64)
    swap = i > j  # store as i < j with the inverse transform
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    kk[swap] = _INVERSE[k]
    yield np.stack([i, j, kk, d], axis=1).astype(np.int64)


def count_steps(hashes: np.ndarray, threshold: int, log_aspect: np.ndarray | None = None,
                chunk: int = 4096) -> int:
    """How many times iter_candidates calls on_step (for a progress bar)."""
    n, n_k = hashes.shape
    ks = [k for k in range(n_k) if not (swaps_axes(k) and _no_turned_match(log_aspect))]
    return len(_segments(threshold)[0]) * len(ks) * math.ceil(n / chunk)


def _seg_mask(start: int, width: int) -> np.uint64:
    return np.uint64(((1 << width) - 1) << start)


def candidate_pairs(
    hashes: np.ndarray, threshold: int, log_aspect: np.ndarray | None = None
) -> np.ndarray:
    """All candidate rows of iter_candidates at once, unique per (i, j, k)."""
    found = list(iter_candidates(hashes, threshold, log_aspect))
    return _unique_rows(np.concatenate(found) if found else np.zeros((0, 4), dtype=np.int64))


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return rows
    n = int(rows[:, :2].max()) + 1
    key = (rows[:, 0] * n + rows[:, 1]) * N_TRANSFORMS + rows[:, 2]
    _, idx = np.unique(key, return_index=True)
    return rows[idx]


def _no_turned_match(log_aspect: np.ndarray | None) -> bool:
    """True when no image turned a quarter has the shape of any image (within tolerance)."""
    if log_aspect is None or len(log_aspect) == 0:
        return False
    ref = np.concatenate([[-np.inf], np.sort(log_aspect), [np.inf]])
    turned = -log_aspect
    pos = np.searchsorted(ref, turned)  # ref[pos - 1] <= turned < ref[pos]
    gap = np.minimum(ref[pos] - turned, turned - ref[pos - 1])
    return bool(gap.min() > ASPECT_TOLERANCE)


def _aspect_filter(cand: np.ndarray, log_aspect: np.ndarray) -> np.ndarray:
    """Drop candidates whose shapes cannot match under their transform (a quarter turn
    swaps height and width; a resize keeps the ratio)."""
    if len(cand) == 0:
        return cand
    ai = log_aspect[cand[:, 0]]
    ai = np.where(np.isin(cand[:, 2], [k for k in range(8) if swaps_axes(k)]), -ai, ai)
    return cand[np.abs(ai - log_aspect[cand[:, 1]]) <= ASPECT_TOLERANCE]


def coarse_check(coarse: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """16x16 high-pass correlation of each candidate (i, j, k): image i under k vs j."""
    sims = np.zeros(len(cand), dtype=np.float32)
    for k in np.unique(cand[:, 2]).tolist():
        s = np.nonzero(cand[:, 2] == k)[0]
        a = np.ascontiguousarray(dihedral(coarse[cand[s, 0]], k, axes=(1, 2)))
        sims[s] = correlation(a, coarse[cand[s, 1]])
    return sims


def fine_check(thumbs: np.ndarray, cand: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """48x48 colour high-pass correlation of each candidate under its transform."""
    sims = np.zeros(len(cand), dtype=np.float32)
    with progress_bar("verifying pixels", len(cand)) as bar:
        for a in range(0, len(cand), chunk):
            part = cand[a : a + chunk]
            fi = fine_features(thumbs[part[:, 0]])
            fj = fine_features(thumbs[part[:, 1]])
            for k in np.unique(part[:, 2]).tolist():
                m = part[:, 2] == k
                sims[a + np.nonzero(m)[0]] = correlation(
                    np.ascontiguousarray(dihedral(fi[m], k, axes=(1, 2))), fj[m]
                )
            bar.advance(len(part))
    return sims


def verify_pairs(thumbs: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Pixel correlation of each candidate: the fine one where the coarse pass let it through,
    else the coarse one (below COARSE_MIN, so never a match)."""
    sims = coarse_check(coarse_features(thumbs), cand) if len(cand) else np.zeros(0, np.float32)
    go = np.nonzero(sims >= COARSE_MIN)[0]
    sims[go] = fine_check(thumbs, cand[go])
    return sims


# --------------------------------------------------------------------------- rendering
def render(findings: Findings, top: int) -> None:
    """The summary table and the largest groups, on stdout."""
    s = findings.summary()
    rows: list[list[object]] = [
        ["scanned", s["scanned"], ""],
        ["unreadable", s["unreadable"], "reported, left in place"],
        ["exact duplicate groups", s["exact_groups"], f"{s['exact_files']} files"],
        ["near duplicate groups", s["near_groups"], f"{s['near_files']} files"],
        ["label conflicts", s["conflict_groups"], f"{s['conflict_files']} files"],
        ["name collisions", s["name_collisions"], "same name in several classes (harmless)"],
        ["would be quarantined", s["to_quarantine"], "files --apply moves"],
    ]
    title = f"dedupe {escape(str(findings.source))}"
    table = simple_table(title, ["finding", "count", "note"], rows)
    console.print(table)
    if findings.unreadable:
        urows: list[list[object]] = [
            [escape(rel), escape(why)] for rel, why in sorted(findings.unreadable.items())
        ]
        console.print(simple_table("Unreadable files", ["file", "reason"], urows[:top]))
        if len(urows) > top:
            console.print(f"... and {len(urows) - top} more (see --report)")
    if findings.groups and top > 0:
        shown = min(top, len(findings.groups))
        table = Table(
            title=f"Largest groups (top {shown} of {len(findings.groups)}; * = kept)",
            title_justify="left",
        )
        table.add_column("#", justify="right")
        table.add_column("kind")
        table.add_column("files", justify="right")
        table.add_column("members", overflow="fold")
        for n, g in enumerate(findings.groups[:top], 1):
            lines = [
                f"{'*' if f == g.keep else ' '} {f}"
                + (f" [{lab}]" if findings.kind == "csv" or g.conflict else "")
                for f, lab in zip(g.files, g.file_labels, strict=True)
            ][:4]
            if len(g.files) > 4:
                lines.append(f"  ... +{len(g.files) - 4} more")
            kind = g.kind + (" conflict" if g.conflict else "")
            if g.transforms and g.transforms != ["identity"]:
                kind += "\n(" + ", ".join(g.transforms) + ")"
            table.add_row(str(n), kind, str(len(g.files)), escape("\n".join(lines)))
        console.print(table)


def write_report(findings: Findings, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(findings.to_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LeukoError(f"cannot write report {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- quarantine
def default_quarantine(root: Path) -> Path:
    return root.parent / f"{root.name}-quarantine"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _free_name(dest: Path) -> Path:
    """dest, or dest with a ~N suffix: never overwrite anything in quarantine."""
    if not dest.exists():
        return dest
    n = 1
    while True:
        cand = dest.with_name(f"{dest.stem}~{n}{dest.suffix}")
        if not cand.exists():
            return cand
        n += 1


class _Manifest:
    """Append-only JSON lines, flushed and fsynced per line (write-ahead log of moves)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@dataclass
class MoveSummary:
    moved: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: Path | None = None


def check_quarantine(data: Path, quarantine: Path | None) -> Path:
    """The quarantine folder for DATA, refusing CSV manifests and folders inside the tree."""
    data = data.expanduser().resolve()
    if data.is_file():
        raise LeukoError(
            f"--apply moves files, which would break the paths in {data}; "
            "run dedupe on the class folder instead, or pass its --report to "
            "`leuko split --exclude` to leave the files out without moving them"
        )
    qdir = (quarantine.expanduser() if quarantine else default_quarantine(data)).resolve()
    if _inside(qdir, data) or _inside(data, qdir):
        raise LeukoError(
            f"quarantine {qdir} must be outside the scanned tree {data} (or it would be scanned)"
        )
    return qdir


def apply_quarantine(findings: Findings, quarantine: Path | None = None) -> MoveSummary:
    """Move every file Findings.to_quarantine names into quarantine, logging each move."""
    qdir = check_quarantine(findings.source, quarantine)
    root = findings.root.resolve()
    summary = MoveSummary()
    todo: list[str] = []
    for g in findings.groups:
        if g.keep is not None and not (root / g.keep).is_file():
            # the copy meant to stay has gone since the scan: moving the rest would
            # take the picture out of the dataset altogether
            summary.notes.append(f"{g.keep} is gone since the scan; its group was left alone")
            summary.skipped += len(g.to_move)
            continue
        todo.extend(g.to_move)
    todo.sort()
    if not todo:
        return summary
    try:
        qdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeukoError(f"cannot create quarantine {qdir}: {exc.strerror or exc}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mpath = _free_name(qdir / f"dedupe-manifest-{stamp}.jsonl")
    log = _Manifest(mpath)
    summary.manifest = mpath
    log.write({
        "leuko_dedupe_manifest": MANIFEST_VERSION, "root": str(root), "quarantine": str(qdir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    reason = {f: ("conflict" if g.conflict else g.kind) for g in findings.groups for f in g.to_move}
    try:
        with progress_bar("quarantining", len(todo)) as bar:
            for rel in todo:
                bar.advance()
                src = root / rel
                if not src.is_file():
                    summary.skipped += 1
                    continue
                try:
                    sha = file_sha256(src)
                    dest = _free_name(qdir / rel)
                    entry = {"source": str(src), "destination": str(dest), "rel": rel,
                             "sha256": sha, "reason": reason.get(rel, "")}
                    log.write({**entry, "status": "planned"})
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(src), str(dest))
                    log.write({**entry, "status": "moved"})
                    summary.moved += 1
                except OSError as exc:
                    summary.failed.append(f"{rel}: {exc.strerror or exc}")
    finally:
        log.close()
    return summary


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The last state of every move in a manifest, in the order they were planned."""
    p = path.expanduser()
    if not p.is_file():
        raise LeukoError(f"{p}: no such manifest file")
    entries: dict[str, dict[str, Any]] = {}
    header = False
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LeukoError(f"cannot read manifest {p}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a line cut short by an interruption
                continue
            raise LeukoError(f"{p}:{n} is not a JSON line; not a dedupe manifest?") from None
        if "leuko_dedupe_manifest" in obj:
            header = True
            continue
        if not isinstance(obj, dict) or not {"source", "destination", "sha256"} <= obj.keys():
            raise LeukoError(f"{p}:{n} lacks source/destination/sha256; not a dedupe manifest?")
        key = obj["destination"]
        entries[key] = {**entries.get(key, {}), **obj}
    if not header:
        raise LeukoError(f"{p} is not a leuko dedupe manifest (no header line)")
    return list(entries.values())


def undo_quarantine(manifest: Path) -> MoveSummary:
    """Move every quarantined file back, verifying its sha256; tolerate unmoved entries."""
    entries = read_manifest(manifest)
    summary = MoveSummary(manifest=manifest.expanduser())
    log = _Manifest(manifest.expanduser())
    try:
        with progress_bar("restoring", len(entries)) as bar:
            for e in entries:
                bar.advance()
                src, dest, sha = Path(e["source"]), Path(e["destination"]), e["sha256"]
                try:
                    if src.is_file() and file_sha256(src) == sha:
                        # planned but never moved, or already restored
                        summary.skipped += 1
                        if dest.exists():
                            summary.notes.append(
                                f"{src} is in place; a copy remains at {dest} (not deleted)"
                            )
                        continue
                    if not dest.exists():
                        summary.failed.append(f"{dest}: missing from quarantine")
                        continue
                    if file_sha256(dest) != sha:
                        summary.failed.append(
                            f"{dest}: content changed since quarantine (sha256 differs); left there"
                        )
                        continue
                    if src.exists():
                        summary.failed.append(
                            f"{src} exists and differs from the quarantined file; "
                            f"not overwritten ({dest} left in quarantine)"
                        )
                        continue
                    src.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(dest), str(src))
                    log.write({**{k: e[k] for k in ("source", "destination", "sha256")},
                               "status": "restored"})
                    summary.moved += 1
                except OSError as exc:
                    summary.failed.append(f"{dest}: {exc.strerror or exc}")
    finally:
        log.close()
    return summary


# --------------------------------------------------------------------------- CLI
def run_dedupe_cli(
    data: Path | None,
    threshold: int = 10,
    transforms: bool = True,
    report: Path | None = None,
    apply: bool = False,
    quarantine: Path | None = None,
    undo: Path | None = None,
    top: int = 10,
) -> None:
    """`leuko dedupe`: scan and report (dry run), --apply to quarantine, --undo to restore."""
    if top < 0:
        raise LeukoError(f"--top must be 0 or more (got {top})")
    if undo is not None:
        if data is not None or apply:
            raise LeukoError("--undo MANIFEST works alone: leave out DATA and --apply")
        s = undo_quarantine(undo)
        console.print(
            f"restored {s.moved} file(s); {s.skipped} already in place; {len(s.failed)} problem(s)"
        )
        for note in s.notes:
            warn(note)
        _fail_if(s.failed, "could not be restored")
        return
    if data is None:
        raise LeukoError("give a dataset folder or CSV manifest (or --undo MANIFEST)")
    if quarantine is not None and not apply:
        raise LeukoError("--quarantine only makes sense with --apply")
    if apply:
        if not data.exists():
            raise LeukoError(f"{data}: no such file or directory")
        check_quarantine(data, quarantine)  # fail before the scan, not after it
    findings = find_duplicates(data, threshold=threshold, transforms=transforms)
    render(findings, top)
    info(f"{findings.candidates} hash candidates, {findings.pairs} confirmed pairs, "
         f"{findings.seconds:.1f} s")
    if report is not None:
        write_report(findings, report)
        console.print(f"report: {report}", soft_wrap=True)
    if not apply:
        if findings.to_quarantine:
            console.print("dry run: nothing moved; --apply moves these into quarantine")
        return
    s = apply_quarantine(findings, quarantine)
    for note in s.notes:
        warn(note)
    if s.manifest is None:
        console.print("nothing to quarantine")
    else:
        console.print(f"moved {s.moved} file(s) into {s.manifest.parent}", soft_wrap=True)
        console.print(f"manifest: {s.manifest}", soft_wrap=True)
        console.print(f"undo with: leuko dedupe --undo '{s.manifest}'", soft_wrap=True)
    _fail_if(s.failed, "could not be moved")


def _fail_if(failed: list[str], what: str) -> None:
    if not failed:
        return
    for line in failed[:20]:
        warn(line)
    if len(failed) > 20:
        warn(f"... and {len(failed) - 20} more")
    raise LeukoError(f"{len(failed)} file(s) {what} (see warnings above)", exit_code=EXIT_PARTIAL)
