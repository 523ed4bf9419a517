"""Verify sibling candidates: descriptor matching, a ratio test and a RANSAC similarity
fit per pair (OpenCV), union-find per class, in worker processes when there is enough
work. Split from `siblings` (which finds the candidates) so that each stays readable.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

from .._util.files import pid_alive
from .._util.parallel import workers
from .._util.progress import Reporter
from .._util.unionfind import UnionFind
from .keypoints import Features, cache_dir, read_features, spawn_context, write_features

RATIO = 0.8
MIN_INLIERS = 20
RANSAC_PX = 5.0


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


_STEP = 64  # images verified between two progress reports


def _link_class(
    feats: list[Features], candidates: list[list[int]], progress: Callable[[int], object]
) -> list[int]:
    """Union-find over verified candidate pairs of one class; returns a root per image.

    The order of verification never changes the result: a pair is skipped only when it
    is linked already, so the groups are the components of all verified pairs.
    """
    import cv2

    cv2.setNumThreads(1)
    uf = UnionFind(len(feats))
    for i, cands in enumerate(candidates):
        for j in cands:
            if uf.find(i) == uf.find(j):
                continue
            if _inliers(feats[i], feats[j]) >= MIN_INLIERS:
                uf.union(i, j)
        if (i + 1) % _STEP == 0:
            progress(_STEP)
    progress(len(feats) % _STEP)
    return [uf.find(i) for i in range(len(feats))]


_QUEUE: Any = None  # in a verifying worker: where its progress goes to the parent


def _init_worker(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue


def _link_class_in_worker(
    job: Path | list[Features], candidates: list[list[int]]
) -> list[int]:
    feats = list(read_features(job).values()) if isinstance(job, Path) else job
    return _link_class(feats, candidates, _QUEUE.put)


def _drain(queue: Any, advance: Callable[[int], None]) -> None:
    while True:
        try:
            advance(queue.get_nowait())
        except Empty:
            return


def verify_all(
    feats: list[Features], members: dict[str, list[int]],
    shortlists: Callable[[], dict[str, list[list[int]]]], reporter: Reporter,
) -> dict[str, list[int]]:
    """Verified sibling roots per class (members: indices into feats, per class).

    When workers do it, `feats` is emptied: they read their class from disk, and the
    caller, which needs the features no more, holds none of them meanwhile, nor while
    `shortlists()` searches the candidates.
    """
    if _in_process(members):
        return _verify_in_process(feats, members, shortlists(), reporter)
    with _spilled(feats, members) as jobs:
        return _verify_in_workers(jobs, members, shortlists(), reporter)


def _in_process(members: dict[str, list[int]]) -> bool:
    n = sum(len(m) for m in members.values())
    return workers("processes") == 1 or len(members) == 1 or n < 200


def _verify_in_process(
    feats: Sequence[Features], members: dict[str, list[int]],
    shortlists: dict[str, list[list[int]]], reporter: Reporter,
) -> dict[str, list[int]]:
    with reporter.task("verifying siblings", sum(len(m) for m in members.values())) as advance:
        return {c: _link_class([feats[i] for i in m], shortlists[c], advance)
                for c, m in members.items()}


@contextmanager
def _spilled(
    feats: list[Features], members: dict[str, list[int]]
) -> Iterator[dict[str, Path | list[Features]]]:
    """Each class's features in a temporary file, and the caller's list emptied.

    Pickled to the workers, the classes used to live three times over at once (the
    parent's list, the pipe's buffer, the worker's copy): at 100,000 images that was
    most of a split's peak memory. A worker reads its class from disk instead, and the
    parent holds none of it while they verify. A class that cannot be written (full or
    read-only disk) is sent the old way.
    """
    try:
        root = _mkdirs(cache_dir())
        _sweep_dead(root)
        tmp = Path(tempfile.mkdtemp(prefix=f"verify-{os.getpid()}-", dir=root))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="leuko-verify-"))
    try:
        jobs: dict[str, Path | list[Features]] = {}
        for c, m in members.items():
            f = tmp / f"class-{len(jobs)}.npz"
            fs = [feats[i] for i in m]
            jobs[c] = f if write_features(f, [str(i) for i in range(len(m))], fs) else fs
            del fs
        feats.clear()
        _release_freed_memory()
        yield jobs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sweep_dead(root: Path) -> None:
    """Remove what a killed split left (kill -9 or the OOM killer skip `finally`): a
    `verify-<pid>-*` folder whose process is gone holds a whole feature set."""
    for d in root.glob("verify-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            alive = pid_alive(int(pid))
        except OverflowError:
            continue  # no pid at all: left alone
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _release_freed_memory() -> None:
    """Give freed heap pages back to the system: the features came back from the
    extraction workers as a million small arrays, and glibc keeps their pages."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the pages are reused by the next allocations instead


def _verify_in_workers(
    jobs: dict[str, Path | list[Features]], members: dict[str, list[int]],
    shortlists: dict[str, list[list[int]]], reporter: Reporter,
) -> dict[str, list[int]]:
    """Verified sibling roots per class, two classes at a time in worker processes."""
    order = sorted(jobs, key=lambda c: -len(members[c]))  # largest first: both end together
    ctx = spawn_context()
    queue = ctx.Queue()  # progress within a class: one class can take many minutes
    with reporter.task("verifying siblings", sum(len(m) for m in members.values())) as advance:
        with ProcessPoolExecutor(workers("processes"), mp_context=ctx,
                                 initializer=_init_worker, initargs=(queue,)) as pool:
            futs = {c: pool.submit(_link_class_in_worker, jobs[c], shortlists[c])
                    for c in order}
            pending = set(futs.values())
            while pending:
                _, pending = wait(pending, timeout=0.5)
                _drain(queue, advance)
            results = {c: futs[c].result() for c in order}
        _drain(queue, advance)  # the workers have flushed their last reports by now
    return results
