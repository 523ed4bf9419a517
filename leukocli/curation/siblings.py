"""Rediscover augmented siblings (views of one original photo) from the pixels.

Public datasets are often released already augmented: each original micrograph was
rotated, shifted, sheared, flipped and contrast-stretched into dozens of files whose
names say nothing about their source. A file-level split then puts views of one cell
on both sides and validation accuracy means nothing. This module links such views:

1. ORB keypoints on each image and on its mirror (an affine fit cannot model a
   mirror, so both orientations are kept); black rotation borders are masked out.
2. A bag of visual words (binary k-means vocabulary, TF-IDF) per image; cosine
   nearest neighbours (scikit-learn) shortlist a few candidates per image within its
   class, so the work grows with n, not n squared.
3. Each candidate pair is verified by descriptor matching with a ratio test and a
   RANSAC similarity fit (OpenCV, `verify`); pairs with enough inliers are linked with
   union-find. Pairs already linked are not verified again.
4. Byte-identical files (sha256) are linked too, across classes.

Per-image features are cached (`keypoints`), and the final groups for an unchanged
set of files are cached as well, so a second split is fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .._util.bits import popcount_rows
from .._util.files import atomic_write_text, file_sha256
from .._util.parallel import workers
from .._util.progress import SILENT, Reporter
from .._util.unionfind import UnionFind
from ..errors import LeukoError
from .keypoints import (
    MIN_SIDE,
    N_FEATURES,
    Features,
    cache_dir,
    compute_features,
    file_key,
    spawn_context,
)
from .verify import (
    MIN_INLIERS,
    RANSAC_PX,
    RATIO,
    verify_all,
)

VOCAB_SAMPLE = 16_000
CANDIDATES = 10
SMALL_CLASS = 64  # classes up to this size are verified all-pairs


# --------------------------------------------------------------------------- shortlist
_COARSE = 32
_FINE = 32


def _kmeans_bits(desc: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    km = MiniBatchKMeans(k, random_state=0, n_init=1, batch_size=1024, max_iter=10)
    # OpenMP spin-waiting on a busy machine makes many small fits crawl; one thread is plenty
    with threadpool_limits(1):
        km.fit(bits)
    return np.packbits(km.cluster_centers_ > 0.5, axis=1)


def _hamming(desc: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Hamming distances (n, k) between packed descriptors (n, 32) and words (k, 32)."""
    return popcount_rows(desc[:, None, :] ^ words[None, :, :])


def _vocabulary(feats: Sequence[Features]) -> tuple[np.ndarray, np.ndarray]:
    """A two-level binary vocabulary (32 x 32 words): k-means on ORB bits, re-binarised.

    Two levels make assigning a descriptor cost 64 comparisons instead of 1024.
    """
    rng = np.random.default_rng(0)
    descs = [f[1] for f in feats if len(f[1])]
    if not descs:
        return np.zeros((1, 32), np.uint8), np.zeros((1, 1, 32), np.uint8)
    pool = np.concatenate(descs)
    if len(pool) > VOCAB_SAMPLE:
        pool = pool[np.sort(rng.choice(len(pool), VOCAB_SAMPLE, replace=False))]
    n_coarse = min(_COARSE, max(1, len(pool) // 8))
    coarse = _kmeans_bits(pool, n_coarse)
    cell = _hamming(pool, coarse).argmin(1)
    fine = np.zeros((len(coarse), _FINE, 32), np.uint8)
    for c in range(len(coarse)):
        members = pool[cell == c]
        if len(members) >= 4 * _FINE:
            fine[c] = _kmeans_bits(members, _FINE)
        else:
            src = members if len(members) else pool
            fine[c] = src[rng.choice(len(src), _FINE, replace=len(src) < _FINE)]
    return coarse, fine


def _words(desc: np.ndarray, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Word counts as uint16 (at most N_FEATURES each): a quarter of float32's memory
    at 100,000 images, and np.sqrt turns them into the same float32 values."""
    hist = np.zeros(len(coarse) * fine.shape[1], np.uint16)
    if len(desc):
        c = _hamming(desc, coarse).argmin(1)
        f = popcount_rows(desc[:, None, :] ^ fine[c]).argmin(1)
        np.add.at(hist, c * fine.shape[1] + f, 1)
    return hist


def _histograms(
    descs: list[tuple[np.ndarray, np.ndarray]], coarse: np.ndarray, fine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Word histograms of a chunk of images, as is and mirrored (runs in a worker)."""
    h = np.array([_words(d, coarse, fine) for d, _ in descs])
    hm = np.array([_words(dm, coarse, fine) for _, dm in descs])
    return h, hm


def _all_histograms(
    feats: Sequence[Features], coarse: np.ndarray, fine: np.ndarray, reporter: Reporter
) -> tuple[np.ndarray, np.ndarray]:
    chunks = [[(f[1], f[3]) for f in feats[i : i + 256]] for i in range(0, len(feats), 256)]
    hs: list[np.ndarray] = []
    hms: list[np.ndarray] = []
    with reporter.task("visual words", len(feats)) as advance:
        if workers("processes") == 1 or len(chunks) < 4:
            results = (_histograms(c, coarse, fine) for c in chunks)
            for (h, hm), c in zip(results, chunks, strict=True):
                hs.append(h)
                hms.append(hm)
                advance(len(c))
        else:
            with ProcessPoolExecutor(workers("processes"), mp_context=spawn_context()) as pool:
                futs = [pool.submit(_histograms, c, coarse, fine) for c in chunks]
                for fut, c in zip(futs, chunks, strict=True):
                    h, hm = fut.result()
                    hs.append(h)
                    hms.append(hm)
                    advance(len(c))
    return np.concatenate(hs), np.concatenate(hms)


def _shortlist(h: np.ndarray, hm: np.ndarray, k: int) -> list[list[int]]:
    """Top-k most similar images (either orientation) by TF-IDF bag of words."""
    from sklearn.neighbors import NearestNeighbors

    n = len(h)
    if n < 2:
        return [[] for _ in range(n)]
    df = ((h > 0).sum(0) + (hm > 0).sum(0)) / 2.0
    idf = np.log((n + 1) / (df + 1)).astype(np.float32)

    def norm(x: np.ndarray) -> np.ndarray:
        x = np.sqrt(x) * idf
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    hn, hmn = norm(h), norm(hm)
    nn = NearestNeighbors(n_neighbors=min(2 * k + 2, 2 * n), metric="cosine", algorithm="brute")
    nn.fit(np.vstack([hn, hmn]))
    _, idx = nn.kneighbors(hn)
    out: list[list[int]] = []
    for i, row in enumerate(idx):
        seen: list[int] = []
        for j in row:
            j = int(j) % n
            if j != i and j not in seen:
                seen.append(j)
                if len(seen) == k:
                    break
        out.append(seen)
    return out


# --------------------------------------------------------------------------- public
def _groups_cache_file(keys: Sequence[str], labels: Sequence[str]) -> Path:
    params = (
        f"{N_FEATURES},{_COARSE}x{_FINE},{VOCAB_SAMPLE},"
        f"{CANDIDATES},{RATIO},{MIN_INLIERS},{RANSAC_PX},{MIN_SIDE}"
    )
    digest = hashlib.sha1(
        "\n".join([params, *(f"{k}|{lab}" for k, lab in zip(keys, labels, strict=True))]).encode()
    ).hexdigest()
    return cache_dir() / f"groups-{digest[:24]}.json"


def _read_cached_groups(gfile: Path, n: int) -> list[str] | None:
    try:
        cached = json.loads(gfile.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(cached, list) and len(cached) == n:
        return [str(g) for g in cached]
    return None


def _link_identical(paths: Sequence[Path], uf: UnionFind, reporter: Reporter) -> None:
    """Byte-identical files are one picture, across classes too."""
    with reporter.task("hashing", len(paths)) as advance:
        by_hash: dict[str, int] = {}
        for i, p in enumerate(paths):
            h = file_sha256(p)
            if h in by_hash:
                uf.union(by_hash[h], i)
            else:
                by_hash[h] = i
            advance()


def _shortlister(
    feats: Sequence[Features], members: dict[str, list[int]], reporter: Reporter
) -> Callable[[], dict[str, list[list[int]]]]:
    """Candidate partners per image within its class: all pairs when small, else words.

    The word histograms need the features and are made now; the neighbour search is
    left to the returned function, which `verify_all` calls once the features are off
    to disk, so the search's working memory and the features are never held together.
    """
    if max(len(m) for m in members.values()) <= SMALL_CLASS:
        # small data: verifying every pair is cheaper than building a vocabulary
        return lambda: {c: [[j for j in range(len(m)) if j != i] for i in range(len(m))]
                        for c, m in members.items()}
    reporter.info("building visual vocabulary")
    coarse, fine = _vocabulary(feats)
    h_all, hm_all = _all_histograms(feats, coarse, fine, reporter)

    def shortlists() -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {}
        with reporter.task("shortlisting", sum(len(m) for m in members.values())) as advance:
            for c, m in members.items():
                out[c] = _shortlist(h_all[np.array(m)], hm_all[np.array(m)], CANDIDATES)
                advance(len(m))
        return out

    return shortlists


def _name_groups(uf: UnionFind, n: int) -> list[str]:
    names: dict[int, str] = {}
    groups = []
    for i in range(n):
        r = uf.find(i)
        if r not in names:
            names[r] = f"s{len(names) + 1:05d}"
        groups.append(names[r])
    return groups


def discover_groups(
    paths: Sequence[Path], labels: Sequence[str], reporter: Reporter = SILENT
) -> list[str]:
    """One group id per path: images that are views of one original share an id.

    Siblings are searched within a label (augmentation never changes a cell's class);
    byte-identical files are joined across labels so a copy filed under two classes
    is never split apart. Images too small to carry keypoints stay alone (and are
    named in one warning). Ids look like ``s00001``, numbered by first appearance.
    """
    if len(paths) != len(labels):
        raise ValueError("paths and labels must have the same length")
    paths = [Path(p) for p in paths]
    n = len(paths)
    if n == 0:
        return []
    keys = [file_key(p) for p in paths]
    gfile = _groups_cache_file(keys, labels)
    cached = _read_cached_groups(gfile, n)
    if cached is not None:
        reporter.info(f"sibling groups reused from cache {gfile}")
        return cached
    feats = compute_features(paths, keys, reporter)
    tiny = [p for p, f in zip(paths, feats, strict=True) if len(f[1]) == 0 and len(f[3]) == 0]
    if tiny:
        reporter.warn(
            f"{len(tiny)} image(s) carry no keypoints (too small or featureless, e.g. "
            f"{tiny[0].name}): each stays its own group"
        )
    uf = UnionFind(n)
    _link_identical(paths, uf, reporter)
    members = {c: [i for i in range(n) if labels[i] == c] for c in sorted(set(labels))}
    roots = verify_all(feats, members, _shortlister(feats, members, reporter), reporter)
    for c, local_roots in roots.items():
        idx = members[c]
        for local, root in enumerate(local_roots):
            uf.union(idx[local], idx[root])
    groups = _name_groups(uf, n)
    try:  # a unique temporary name: two runs sharing the cache never collide
        atomic_write_text(gfile, json.dumps(groups))
    except LeukoError:
        pass  # a read-only cache only makes the next run slower
    return groups
