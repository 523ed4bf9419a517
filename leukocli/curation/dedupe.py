"""Exact and near-duplicate images, label conflicts and name collisions, from content.

Identity comes from content, never from file names: the reference paper flattened the
class folders and lost every picture whose name clashed. The search is

1. one decode per image (thread pool, JPEG draft mode): sha256 of the bytes, a 48x48
   thumbnail and the 64-bit DCT pHash of its eight flips and quarter turns (`hashing`);
2. collapsing before any pairwise work: byte-identical files join their first copy, and
   files with an identical hash are confirmed against one representative, so a folder
   of 600 copies of one picture costs 600 checks, not 180,000;
3. candidate pairs among the representatives from a multi-index over hash segments
   (`candidates`), each confirmed on pixels under its matched transform;
4. union-find into groups: `exact` when every member has the same bytes or decoded
   pixels, else `near`. A group with several labels is a conflict and keeps nothing.

Moving files is `quarantine`'s job; this module only reads.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util.parallel import bounded_map, workers
from .._util.progress import SILENT, Reporter
from .._util.unionfind import UnionFind
from ..data.dataset import Dataset, Record, scan
from ..errors import ParameterError, opt
from .candidates import (
    aspect_filter,
    count_steps,
    iter_candidates,
    unique_rows,
    usable_transforms,
)
from .hashcache import HashCache
from .hashing import (
    HASH_SIDE,
    THUMB,
    TRANSFORM_NAMES,
    ImageHashes,
    coarse_features,
    hash_image,
    phash_variants,
    pixel_digest,
)
from .pixelcheck import CoarseBound, coarse_check, fine_check

MAX_THRESHOLD = 32
COARSE_MIN = 0.90  # 16x16 high-pass correlation a candidate needs before the fine check
VERIFY_MIN = 0.97  # 48x48 high-pass colour correlation that confirms a near copy


def check_threshold(threshold: int) -> None:
    """The one check of --threshold."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ParameterError("threshold", f"{opt('threshold')} must be between 0 and "
                                          f"{MAX_THRESHOLD} (got {threshold})")


# --------------------------------------------------------------------------- results
@dataclass
class Group:
    """Files that hold one picture; `match` is "exact" (same bytes or pixels) or "near"."""

    match: str
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
            "kind": self.match,
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
    """Everything one scan found; `to_dict` is the --report JSON.

    `layout` is how the dataset was given: "folder" (class folders) or "csv" (manifest).
    """

    root: Path
    source: Path
    layout: str
    scanned: int
    unreadable: dict[str, str]
    groups: list[Group]
    name_collisions: list[dict[str, Any]]
    pairs: int  # confirmed links between files before grouping
    candidates: int  # hash candidate pairs that went to pixel verification
    params: dict[str, Any]
    seconds: float = 0.0

    @property
    def to_quarantine(self) -> list[str]:
        return sorted(f for g in self.groups for f in g.to_move)

    def summary(self) -> dict[str, int]:
        exact = [g for g in self.groups if g.match == "exact"]
        near = [g for g in self.groups if g.match == "near"]
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
            "layout": self.layout,
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
@dataclass
class _Images:
    """The readable images of a scan with what one decode of each gave."""

    records: list[Record]
    shas: list[str]
    sizes: list[tuple[int, int]]  # (width, height)
    thumbs: np.ndarray  # (n, THUMB, THUMB, 3) uint8
    gray: np.ndarray  # (n, HASH_SIDE, HASH_SIDE) uint8


class _Links:
    """Confirmed links between images: union-find plus what each link says."""

    def __init__(self, n: int) -> None:
        self.uf = UnionFind(n)
        self.lowest = np.ones(n, dtype=np.float32)  # lowest confirming correlation per file
        self.transforms: dict[int, set[int]] = defaultdict(set)
        self.count = 0

    def add(self, i: int, j: int, similarity: float = 1.0, transform: int | None = None) -> None:
        self.uf.union(i, j)
        self.count += 1
        self.lowest[i] = min(self.lowest[i], similarity)
        self.lowest[j] = min(self.lowest[j], similarity)
        if transform is not None:
            self.transforms[i].add(transform)


def find_duplicates(
    data: str | Path | Dataset,
    threshold: int = 10,
    transforms: bool = True,
    reporter: Reporter = SILENT,
) -> Findings:
    """Scan `data` (folder, CSV manifest or a scanned Dataset) and find duplicates.

    >>> f = find_duplicates("dataset")             # doctest: +SKIP
    >>> [g.files for g in f.groups if g.conflict]  # doctest: +SKIP
    """
    check_threshold(threshold)
    start = time.perf_counter()
    ds = data if isinstance(data, Dataset) else scan(data, check="none", reporter=reporter)
    unreadable = {p.rel: p.reason for p in ds.problems}
    images = _hash_all(ds.records, unreadable, reporter)
    params = {"threshold": threshold, "transforms": transforms, "coarse_min": COARSE_MIN,
              "verify_min": VERIFY_MIN}
    links = _Links(len(images.records))
    reps = _collapse_exact(images, links)
    reps = _collapse_same_hash(images, reps, links, reporter)
    n_cand = _link_near(images, reps, threshold, transforms, links, reporter)
    groups = _make_groups(images, links, reporter)
    return Findings(
        ds.root, ds.source, ds.layout, len(ds.records) + len(ds.problems), unreadable, groups,
        name_collisions(images.records), links.count, n_cand, params,
        time.perf_counter() - start,
    )


def _hash_all(
    records: Sequence[Record], unreadable: dict[str, str], reporter: Reporter
) -> _Images:
    """Hash every record in parallel, or take it from the cache (`hashcache`);
    thumbnails go straight into preallocated arrays (rows of readable images, in
    order) so peak memory stays ~8 kB per image beyond the cache's own."""
    thumbs = np.empty((len(records), THUMB, THUMB, 3), dtype=np.uint8)
    gray = np.empty((len(records), HASH_SIDE, HASH_SIDE), dtype=np.uint8)
    kept: list[Record] = []
    shas: list[str] = []
    sizes: list[tuple[int, int]] = []
    cache = HashCache([r.path for r in records])
    todo = [r.path for i, r in enumerate(records) if cache.get(i) is None]
    with reporter.task("hashing images", len(todo)) as advance, \
            ThreadPoolExecutor(workers()) as pool:
        computed = bounded_map(pool, hash_image, todo)
        try:
            for i, rec in enumerate(records):
                fp: ImageHashes | str | None = cache.get(i)
                if fp is None:
                    fp = next(computed)
                    if isinstance(fp, ImageHashes):
                        cache.add(i, fp)
                    advance()
                if isinstance(fp, ImageHashes):
                    thumbs[len(kept)] = fp.thumb
                    gray[len(kept)] = fp.gray
                    kept.append(rec)
                    shas.append(fp.sha256)
                    sizes.append((fp.width, fp.height))
                elif fp is not None:
                    unreadable[rec.rel] = fp
        except BaseException:
            cache.flush()  # what was hashed survives a Ctrl-C: the next run resumes there
            raise
    cache.save()
    n = len(kept)
    return _Images(kept, shas, sizes, thumbs[:n], gray[:n])


def _collapse_exact(images: _Images, links: _Links) -> list[int]:
    """Link byte-identical files to their first copy; return one representative each."""
    first: dict[str, int] = {}
    reps: list[int] = []
    for i, sha in enumerate(images.shas):
        j = first.setdefault(sha, i)
        if j == i:
            reps.append(i)
        else:
            links.add(j, i)
    return reps


def _collapse_same_hash(
    images: _Images, reps: list[int], links: _Links, reporter: Reporter
) -> list[int]:
    """Confirm files with an identical hash against one representative each.

    Re-encoded copies of one picture mostly hash alike; checking each against one
    member keeps their cost linear. Files that fail stay representatives themselves.
    """
    if len(reps) < 2:
        return reps
    base = phash_variants(images.gray[reps], False)[:, 0]
    by_hash: dict[int, list[int]] = defaultdict(list)
    for r, h in zip(reps, base.tolist(), strict=True):
        by_hash[h].append(r)
    pairs = np.array(
        [(m[0], i, 0, 0) for m in by_hash.values() if len(m) > 1 for i in m[1:]], dtype=np.int64
    ).reshape(-1, 4)
    if len(pairs) == 0:
        return reps
    sims = fine_check(images.thumbs, pairs, reporter=reporter)
    joined: set[int] = set()
    for (i, j, _k, _d), s in zip(pairs.tolist(), sims.tolist(), strict=True):
        if s >= VERIFY_MIN:
            links.add(i, j, s, 0)
            joined.add(j)
    return [r for r in reps if r not in joined]


def _link_near(
    images: _Images, reps: list[int], threshold: int, transforms: bool, links: _Links,
    reporter: Reporter,
) -> int:
    """Hash candidates among representatives, confirmed on pixels; returns the candidates."""
    if len(reps) < 2:
        return 0
    idx = np.asarray(reps, dtype=np.int64)  # rows of images, read in slices (no copy)
    hashes = np.concatenate([phash_variants(images.gray[idx[a : a + 4096]], transforms)
                             for a in range(0, len(idx), 4096)])
    aspect = np.log(np.array([images.sizes[i][1] / images.sizes[i][0] for i in reps]))
    coarse = np.concatenate([coarse_features(images.thumbs[idx[a : a + 1024]])
                             for a in range(0, len(idx), 1024)])
    bound = CoarseBound(coarse, usable_transforms(hashes.shape[1], aspect))
    n_cand = 0
    kept: list[np.ndarray] = []
    with reporter.task("matching hashes", count_steps(hashes, threshold, aspect)) as advance:
        for block in iter_candidates(hashes, threshold, aspect, on_step=advance):
            block = aspect_filter(block, aspect)
            n_cand += len(block)
            block = block[bound.may_pass(block, COARSE_MIN)]
            kept.append(block[coarse_check(coarse, block) >= COARSE_MIN])
    cand = unique_rows(np.concatenate(kept)) if kept else np.zeros((0, 4), dtype=np.int64)
    cand[:, :2] = idx[cand[:, :2]]  # representatives' numbers -> image rows
    sims = fine_check(images.thumbs, cand, reporter=reporter)
    ok = sims >= VERIFY_MIN
    for (i, j, k, _d), s in zip(cand[ok].tolist(), sims[ok].tolist(), strict=True):
        if links.uf.find(i) != links.uf.find(j):
            links.add(i, j, s, k)
    return n_cand


def _make_groups(images: _Images, links: _Links, reporter: Reporter) -> list[Group]:
    records = images.records
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        members[links.uf.find(i)].append(i)
    multi = [sorted(m, key=lambda i: records[i].rel) for m in members.values() if len(m) > 1]
    # the same decoded pixels in different bytes (PNG vs BMP) still counts as exact
    need = sorted({i for m in multi if len({images.shas[i] for i in m}) > 1 for i in m})
    pixels = dict(zip(need, _pixel_digests([records[i].path for i in need], reporter),
                      strict=True))
    groups = [_group(m, images, links, pixels) for m in multi]
    groups.sort(key=lambda g: (-len(g.files), g.files[0]))
    return groups


def _group(m: list[int], images: _Images, links: _Links, pixels: dict[int, str | None]) -> Group:
    records = images.records
    ident = {images.shas[i] for i in m}
    if len(ident) > 1:
        ident = {pixels.get(i) or f"bytes:{images.shas[i]}" for i in m}
    match = "exact" if len(ident) == 1 else "near"
    file_labels = [records[i].label for i in m]
    labels = sorted(set(file_labels))
    conflict = len(labels) > 1
    keep = None
    if not conflict:
        area = {i: images.sizes[i][0] * images.sizes[i][1] for i in m}
        keep = records[min(m, key=lambda i: (-area[i], records[i].rel))].rel
    sim = 1.0 if match == "exact" else float(min(links.lowest[i] for i in m))
    ks = sorted({k for i in m for k in links.transforms.get(i, ())}) if match == "near" else []
    return Group(match, [records[i].rel for i in m], labels, file_labels, conflict, keep, sim,
                 [TRANSFORM_NAMES[k] for k in ks])


def _pixel_digests(paths: Sequence[Path], reporter: Reporter) -> list[str | None]:
    if not paths:
        return []
    out: list[str | None] = []
    with reporter.task("comparing pixels", len(paths)) as advance, \
            ThreadPoolExecutor(workers()) as pool:
        for d in pool.map(pixel_digest, paths):
            out.append(d)
            advance()
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
