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
   RANSAC similarity fit (OpenCV); pairs with enough inliers are linked with
   union-find. Pairs already linked are not verified again.
4. Byte-identical files (sha256) are linked too, across classes.

Per-image features are cached in ``~/.cache/leuko/siblings-v1/`` (or
``$LEUKO_CACHE_DIR``), keyed by absolute path, size and mtime, and the final groups
for an unchanged set of files are cached as well, so a second split is fast.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.context
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .console import info, progress_bar
from .dataset import file_sha256

CACHE_VERSION = "siblings-v1"
N_FEATURES = 400
VOCAB_SAMPLE = 16_000
CANDIDATES = 10
SMALL_CLASS = 64  # classes up to this size are verified all-pairs
RATIO = 0.8
MIN_INLIERS = 20
RANSAC_PX = 5.0

Features = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # pts, desc, pts_m, desc_m


def cache_dir() -> Path:
    """Where sibling features and groups are cached (LEUKO_CACHE_DIR overrides)."""
    base = os.environ.get("LEUKO_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "leuko"
    return root / CACHE_VERSION


def _mp() -> multiprocessing.context.BaseContext:
    # spawn, not fork: forking after BLAS/OpenMP threads have started can deadlock
    return multiprocessing.get_context("spawn")


def _workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# --------------------------------------------------------------------------- features
_EMPTY_PTS = np.zeros((0, 2), np.float32)
_EMPTY_DESC = np.zeros((0, 32), np.uint8)


def _orb_features(path: str) -> Features:
    """ORB keypoints/descriptors of a grayscale, CLAHE-equalised image and its mirror."""
    import cv2

    cv2.setNumThreads(1)
    data = np.fromfile(path, dtype=np.uint8)
    im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if im is None:
        return _EMPTY_PTS, _EMPTY_DESC, _EMPTY_PTS, _EMPTY_DESC
    gray = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
    # Rotation/shift fill is black; its straight edges would match across every image.
    mask = (im.max(axis=2) > 20).astype(np.uint8) * 255
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
    gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    orb = cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=N_FEATURES, fastThreshold=10
    )
    out: list[np.ndarray] = []
    for g, m in (
        (gray, mask),
        (np.ascontiguousarray(gray[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])),
    ):
        kps, desc = orb.detectAndCompute(g, m)
        if desc is None or not kps:
            out += [_EMPTY_PTS, _EMPTY_DESC]
        else:
            out += [np.array([k.pt for k in kps], np.float32), desc.astype(np.uint8)]
    return out[0], out[1], out[2], out[3]


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class _FeatureCache:
    """Per-folder npz files of features, matched entry by entry on path+size+mtime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loaded: dict[str, Features] = {}
        self.dirty: dict[Path, bool] = {}

    def _file(self, folder: Path) -> Path:
        h = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
        return self.root / f"features-{h}.npz"

    def load(self, folders: set[Path]) -> None:
        for folder in folders:
            f = self._file(folder)
            if not f.exists():
                continue
            try:
                with np.load(f, allow_pickle=False) as z:
                    keys = z["keys"]
                    counts = z["counts"]
                    pts, desc, pts_m, desc_m = z["pts"], z["desc"], z["pts_m"], z["desc_m"]
            except (OSError, ValueError, KeyError):
                continue  # a damaged cache is only a slower run
            o = np.zeros(2, np.int64)
            for k, (c, cm) in zip(keys, counts, strict=True):
                self.loaded[str(k)] = (
                    pts[o[0] : o[0] + c],
                    desc[o[0] : o[0] + c],
                    pts_m[o[1] : o[1] + cm],
                    desc_m[o[1] : o[1] + cm],
                )
                o += (c, cm)

    def save(self, folder: Path, keys: list[str], feats: list[Features]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self._file(folder).with_suffix(".tmp.npz")
            np.savez(
                tmp,
                keys=np.array(keys, dtype=str),
                counts=np.array([(len(f[1]), len(f[3])) for f in feats], np.int64).reshape(-1, 2),
                pts=np.concatenate([f[0] for f in feats] or [_EMPTY_PTS]),
                desc=np.concatenate([f[1] for f in feats] or [_EMPTY_DESC]),
                pts_m=np.concatenate([f[2] for f in feats] or [_EMPTY_PTS]),
                desc_m=np.concatenate([f[3] for f in feats] or [_EMPTY_DESC]),
            )
            os.replace(tmp, self._file(folder))
        except OSError:
            pass  # read-only home: features are simply recomputed next time


def compute_features(paths: Sequence[Path], keys: Sequence[str]) -> list[Features]:
    """Features for every path, from the cache where the file is unchanged."""
    cache = _FeatureCache(cache_dir())
    folders = {p.resolve().parent for p in paths}
    cache.load(folders)
    feats: list[Features | None] = [cache.loaded.get(k) for k in keys]
    todo = [i for i, f in enumerate(feats) if f is None]
    if todo:
        info(f"extracting keypoints from {len(todo)} images (cache: {cache.root})")
        with progress_bar("keypoints", len(todo)) as bar:
            if len(todo) < 64 or _workers() == 1:
                for i in todo:
                    feats[i] = _orb_features(str(paths[i]))
                    bar.advance()
            else:
                with ProcessPoolExecutor(_workers(), mp_context=_mp()) as pool:
                    it = pool.map(_orb_features, [str(paths[i]) for i in todo], chunksize=32)
                    for i, f in zip(todo, it, strict=True):
                        feats[i] = f
                        bar.advance()
        done: list[Features] = [f for f in feats if f is not None]
        by_folder: dict[Path, tuple[list[str], list[Features]]] = {}
        for p, k, f in zip(paths, keys, done, strict=True):
            ks, fs = by_folder.setdefault(p.resolve().parent, ([], []))
            ks.append(k)
            fs.append(f)
        for folder, (ks, fs) in by_folder.items():
            # keep entries of files not in this run (e.g. a subset manifest) as well
            seen = set(ks)
            for k, f in cache.loaded.items():
                if k not in seen and Path(k.split("|", 1)[0]).parent == folder:
                    ks.append(k)
                    fs.append(f)
            cache.save(folder, ks, fs)
    return [f for f in feats if f is not None]


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


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits summed over the last axis (numpy >= 2 has a fast bitwise_count)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(-1, dtype=np.uint16)
    return np.unpackbits(x, axis=-1).sum(-1, dtype=np.uint16)


def _hamming(desc: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Hamming distances (n, k) between packed descriptors (n, 32) and words (k, 32)."""
    return _popcount(desc[:, None, :] ^ words[None, :, :])


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
    hist = np.zeros(len(coarse) * fine.shape[1], np.float32)
    if len(desc):
        c = _hamming(desc, coarse).argmin(1)
        f = _popcount(desc[:, None, :] ^ fine[c]).argmin(1)
        np.add.at(hist, c * fine.shape[1] + f, 1.0)
    return hist


def _histograms(
    descs: list[tuple[np.ndarray, np.ndarray]], coarse: np.ndarray, fine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Word histograms of a chunk of images, as is and mirrored (runs in a worker)."""
    h = np.array([_words(d, coarse, fine) for d, _ in descs])
    hm = np.array([_words(dm, coarse, fine) for _, dm in descs])
    return h, hm


def _all_histograms(
    feats: Sequence[Features], coarse: np.ndarray, fine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    chunks = [[(f[1], f[3]) for f in feats[i : i + 256]] for i in range(0, len(feats), 256)]
    hs: list[np.ndarray] = []
    hms: list[np.ndarray] = []
    with progress_bar("visual words", len(feats)) as bar:
        if _workers() == 1 or len(chunks) < 4:
            results = (_histograms(c, coarse, fine) for c in chunks)
            for (h, hm), c in zip(results, chunks, strict=True):
                hs.append(h)
                hms.append(hm)
                bar.advance(len(c))
        else:
            with ProcessPoolExecutor(_workers(), mp_context=_mp()) as pool:
                futs = [pool.submit(_histograms, c, coarse, fine) for c in chunks]
                for fut, c in zip(futs, chunks, strict=True):
                    h, hm = fut.result()
                    hs.append(h)
                    hms.append(hm)
                    bar.advance(len(c))
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


# --------------------------------------------------------------------------- verify
def _inliers(a: Features, b: Features) -> int:
    """RANSAC similarity inliers between a and b (b as is, or mirrored)."""
    import cv2

    bf = cv2.BFMatcher(cv2.NORM_HAMMING)
    best = 0
    pa, da = a[0], a[1]
    if len(da) < 3:
        return 0
    for pb, db in ((b[0], b[1]), (b[2], b[3])):
        if len(db) < 3:
            continue
        good = [
            m[0]
            for m in bf.knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance
        ]
        if len(good) < max(6, MIN_INLIERS // 2):
            continue
        src = pa[[g.queryIdx for g in good]]
        dst = pb[[g.trainIdx for g in good]]
        _, mask = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=RANSAC_PX,
            maxIters=500,
            confidence=0.99,
            refineIters=0,
        )
        if mask is not None:
            best = max(best, int(mask.sum()))
            if best >= MIN_INLIERS:
                break
    return best


def _link_class(feats: list[Features], candidates: list[list[int]]) -> list[int]:
    """Union-find over verified candidate pairs of one class; returns a root per image."""
    import cv2

    cv2.setNumThreads(1)
    uf = _UnionFind(len(feats))
    for i, cands in enumerate(candidates):
        for j in cands:
            if uf.find(i) == uf.find(j):
                continue
            if _inliers(feats[i], feats[j]) >= MIN_INLIERS:
                uf.union(i, j)
    return [uf.find(i) for i in range(len(feats))]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# --------------------------------------------------------------------------- public
@dataclass(frozen=True)
class SiblingStats:
    images: int
    groups: int
    largest: int
    cached: bool


last_stats: SiblingStats | None = None


def discover_groups(paths: Sequence[Path], labels: Sequence[str]) -> list[str]:
    """One group id per path: images that are views of one original share an id.

    Siblings are searched within a label (augmentation never changes a cell's class);
    byte-identical files are joined across labels so a copy filed under two classes
    is never split apart. Ids look like ``s00001``, numbered by first appearance.
    """
    global last_stats
    if len(paths) != len(labels):
        raise ValueError("paths and labels must have the same length")
    paths = [Path(p) for p in paths]
    n = len(paths)
    if n == 0:
        return []
    keys = [_file_key(p) for p in paths]
    params = (
        f"{N_FEATURES},{_COARSE}x{_FINE},{VOCAB_SAMPLE},"
        f"{CANDIDATES},{RATIO},{MIN_INLIERS},{RANSAC_PX}"
    )
    digest = hashlib.sha1(
        "\n".join([params, *(f"{k}|{lab}" for k, lab in zip(keys, labels, strict=True))]).encode()
    ).hexdigest()
    gfile = cache_dir() / f"groups-{digest[:24]}.json"
    try:
        cached = json.loads(gfile.read_text())
        if isinstance(cached, list) and len(cached) == n:
            groups = [str(g) for g in cached]
            last_stats = _stats(groups, True)
            info(f"sibling groups reused from cache {gfile}")
            return groups
    except (OSError, ValueError):
        pass

    feats = compute_features(paths, keys)
    uf = _UnionFind(n)

    with progress_bar("hashing", n) as bar:
        by_hash: dict[str, int] = {}
        for i, p in enumerate(paths):
            h = file_sha256(p)
            if h in by_hash:
                uf.union(by_hash[h], i)
            else:
                by_hash[h] = i
            bar.advance()

    classes = sorted(set(labels))
    members = {c: [i for i in range(n) if labels[i] == c] for c in classes}
    shortlists: dict[str, list[list[int]]] = {}
    if max(len(m) for m in members.values()) <= SMALL_CLASS:
        # small data: verifying every pair is cheaper than building a vocabulary
        for c in classes:
            m = len(members[c])
            shortlists[c] = [[j for j in range(m) if j != i] for i in range(m)]
    else:
        info("building visual vocabulary")
        coarse, fine = _vocabulary(feats)
        h_all, hm_all = _all_histograms(feats, coarse, fine)
        for c in classes:
            sel = np.array(members[c])
            shortlists[c] = _shortlist(h_all[sel], hm_all[sel], CANDIDATES)

    with progress_bar("verifying siblings", n) as bar:
        jobs = [(c, [feats[i] for i in members[c]], shortlists[c]) for c in classes]
        if _workers() == 1 or len(jobs) == 1 or n < 200:
            results = []
            for c, fs, sl in jobs:
                results.append(_link_class(fs, sl))
                bar.advance(len(members[c]))
        else:
            # largest classes first so the two workers finish together
            order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][1]))
            with ProcessPoolExecutor(_workers(), mp_context=_mp()) as pool:
                futs = {j: pool.submit(_link_class, jobs[j][1], jobs[j][2]) for j in order}
                results_by = {}
                for j in order:
                    results_by[j] = futs[j].result()
                    bar.advance(len(members[jobs[j][0]]))
            results = [results_by[j] for j in range(len(jobs))]
    for c, roots in zip(classes, results, strict=True):
        idx = members[c]
        for local, root in enumerate(roots):
            uf.union(idx[local], idx[root])

    names: dict[int, str] = {}
    groups = []
    for i in range(n):
        r = uf.find(i)
        if r not in names:
            names[r] = f"s{len(names) + 1:05d}"
        groups.append(names[r])
    try:
        gfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = gfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, gfile)
    except OSError:
        pass
    last_stats = _stats(groups, False)
    return groups


def _stats(groups: list[str], cached: bool) -> SiblingStats:
    from collections import Counter

    counts = Counter(groups)
    return SiblingStats(len(groups), len(counts), max(counts.values(), default=0), cached)
