"""ORB keypoints of each image and its mirror, cached on disk: the raw material of
sibling discovery. Extraction is the slow part of `leuko split --group-by auto`, so
features are kept per folder in ``~/.cache/leuko/siblings-v1/`` (or
``$LEUKO_CACHE_DIR``), keyed by absolute path, size and mtime.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.context
import os
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .._util.files import atomic_write
from .._util.parallel import workers
from .._util.progress import SILENT, Reporter
from ..errors import LeukoError

CACHE_VERSION = "siblings-v1"
N_FEATURES = 400
MIN_SIDE = 32  # smaller images cannot carry enough keypoints to match: each stays alone

Features = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # pts, desc, pts_m, desc_m


def cache_dir() -> Path:
    """Where sibling features and groups are cached (LEUKO_CACHE_DIR overrides)."""
    base = os.environ.get("LEUKO_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "leuko"
    return root / CACHE_VERSION


def spawn_context() -> multiprocessing.context.BaseContext:
    # spawn, not fork: forking after BLAS/OpenMP threads have started can deadlock
    return multiprocessing.get_context("spawn")


_EMPTY_PTS = np.zeros((0, 2), np.float32)
_EMPTY_DESC = np.zeros((0, 32), np.uint8)


def _orb_features(path: str) -> Features:
    """ORB keypoints/descriptors of a grayscale, CLAHE-equalised image and its mirror."""
    import cv2

    cv2.setNumThreads(1)
    data = np.fromfile(path, dtype=np.uint8)
    im = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if im is None or min(im.shape[:2]) < MIN_SIDE:
        return _EMPTY_PTS, _EMPTY_DESC, _EMPTY_PTS, _EMPTY_DESC
    try:
        return _orb_of(im)
    except cv2.error:  # odd shapes OpenCV refuses: no keypoints, the image stays alone
        return _EMPTY_PTS, _EMPTY_DESC, _EMPTY_PTS, _EMPTY_DESC


def _orb_of(im: np.ndarray) -> Features:
    import cv2

    gray = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
    # Rotation/shift fill is black; its straight edges would match across every image.
    # The brightest channel by OpenCV: numpy's max over the channel axis of a (H, W, 3)
    # image was 30x slower and 11% of a cold split (benchmarks/scaling.py's profile).
    brightest = cv2.max(cv2.max(im[:, :, 0], im[:, :, 1]), im[:, :, 2])
    mask = cv2.erode((brightest > 20).astype(np.uint8) * 255, np.ones((9, 9), np.uint8))
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


def file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


SAVE_EVERY = 2000  # new features written to a part file this often during extraction


def folder_file(kind: str, folder: str | Path) -> Path:
    """The cache's one file of `kind` ("features", "hashes") for one image folder."""
    return cache_dir() / f"{kind}-{hashlib.sha1(str(folder).encode()).hexdigest()[:16]}.npz"


def part_files(main: Path) -> list[Path]:
    """The part files an unfinished run wrote beside `main` (merged away by the next save)."""
    return sorted(main.parent.glob(f"{main.stem}.part-*.npz"))


def new_part(main: Path) -> Path:
    """A part file's name no other run can take."""
    return main.with_name(f"{main.stem}.part-{uuid.uuid4().hex[:12]}.npz")


class _FeatureCache:
    """Per-folder npz files of features, matched entry by entry on path+size+mtime.

    Extraction also writes part files (``features-H.part-*.npz``) every SAVE_EVERY
    images, so a split killed or interrupted after an hour resumes from what it had
    extracted; the final save merges them into the folder's one file and removes them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loaded: dict[str, Features] = {}
        self.parts: list[Path] = []

    def _file(self, folder: Path) -> Path:
        return folder_file("features", folder)

    def load(self, folders: set[Path]) -> None:
        for folder in folders:
            main = self._file(folder)
            parts = part_files(main)
            self.parts += parts
            for f in [main, *parts]:
                if f.exists():
                    self.loaded.update(read_features(f))

    def save(self, folder: Path, keys: list[str], feats: list[Features]) -> bool:
        """Write one folder's features under a unique temporary name, then rename: two
        runs sharing the cache never write one file at the same time."""
        return write_features(self._file(folder), keys, feats)

    def save_part(self, folder: Path, keys: list[str], feats: list[Features]) -> None:
        part = new_part(self._file(folder))
        if write_features(part, keys, feats):
            self.parts.append(part)

    def drop_parts(self) -> None:
        """Parts are merged into the folder files by now; a part another run is still
        adding to would only be recomputed."""
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts = []


def read_features(f: Path) -> dict[str, Features]:
    """Features by key from one npz; views into four arrays, so dropping them frees all."""
    try:
        with np.load(f, allow_pickle=False) as z:
            keys = z["keys"]
            counts = z["counts"]
            pts, desc, pts_m, desc_m = z["pts"], z["desc"], z["pts_m"], z["desc_m"]
    except (OSError, ValueError, KeyError, EOFError):
        return {}  # a damaged cache is only a slower run
    out: dict[str, Features] = {}
    o = np.zeros(2, np.int64)
    for k, (c, cm) in zip(keys, counts, strict=True):
        out[str(k)] = (
            pts[o[0] : o[0] + c],
            desc[o[0] : o[0] + c],
            pts_m[o[1] : o[1] + cm],
            desc_m[o[1] : o[1] + cm],
        )
        o += (c, cm)
    return out


def write_features(path: Path, keys: list[str], feats: Sequence[Features]) -> bool:
    """Atomically, as four flat arrays and counts; False when the folder is read-only."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file, not a name: np.savez would append ".npz"
            np.savez(
                fh,
                keys=np.array(keys, dtype=str),
                counts=np.array([(len(f[1]), len(f[3])) for f in feats],
                                np.int64).reshape(-1, 2),
                pts=np.concatenate([f[0] for f in feats] or [_EMPTY_PTS]),
                desc=np.concatenate([f[1] for f in feats] or [_EMPTY_DESC]),
                pts_m=np.concatenate([f[2] for f in feats] or [_EMPTY_PTS]),
                desc_m=np.concatenate([f[3] for f in feats] or [_EMPTY_DESC]),
            )

    try:
        atomic_write(path, write)
    except LeukoError:
        return False  # read-only home: features are simply recomputed next time
    return True


def _by_folder(paths: Sequence[Path], keys: Sequence[str], feats: Sequence[Features],
               ) -> dict[Path, tuple[list[str], list[Features]]]:
    out: dict[Path, tuple[list[str], list[Features]]] = {}
    for p, k, f in zip(paths, keys, feats, strict=True):
        ks, fs = out.setdefault(p.parent, ([], []))
        ks.append(k)
        fs.append(f)
    return out


def _extract(
    paths: Sequence[Path], keys: Sequence[str], cache: _FeatureCache
) -> Iterator[tuple[int, Features]]:
    """(index, features) of each path, in order; every SAVE_EVERY images, and once more
    when the work stops early (Ctrl-C, an error), the new ones go to a part file. A
    kill -9 loses at most the last SAVE_EVERY."""
    pending: list[tuple[int, Features]] = []

    def flush() -> None:
        idx = [i for i, _ in pending]
        by_folder = _by_folder([paths[i] for i in idx], [keys[i] for i in idx],
                               [f for _, f in pending])
        for folder, (ks, fs) in by_folder.items():
            cache.save_part(folder, ks, fs)
        pending.clear()

    try:
        for i, f in enumerate(_orb_all([str(p) for p in paths])):
            pending.append((i, f))
            yield i, f
            if len(pending) >= SAVE_EVERY:
                flush()
    except BaseException:
        if pending:
            flush()
        raise


def _orb_all(paths: list[str]) -> Iterator[Features]:
    if len(paths) < 64 or workers("processes") == 1:
        yield from map(_orb_features, paths)
        return
    with ProcessPoolExecutor(workers("processes"), mp_context=spawn_context()) as pool:
        for a in range(0, len(paths), 4096):  # Executor.map would queue every result
            yield from pool.map(_orb_features, paths[a : a + 4096], chunksize=32)


def compute_features(
    paths: Sequence[Path], keys: Sequence[str], reporter: Reporter = SILENT
) -> list[Features]:
    """Features for every path, from the cache where the file is unchanged."""
    cache = _FeatureCache(cache_dir())
    resolved = [p.resolve() for p in paths]
    cache.load({p.parent for p in resolved})
    feats: list[Features | None] = [cache.loaded.get(k) for k in keys]
    todo = [i for i, f in enumerate(feats) if f is None]
    if todo or cache.parts:
        if todo:
            reporter.info(f"extracting keypoints from {len(todo)} images (cache: {cache.root})")
        with reporter.task("keypoints", len(todo)) as advance:
            for i, f in _extract([resolved[i] for i in todo], [keys[i] for i in todo], cache):
                feats[todo[i]] = f
                advance()
        done: list[Features] = [f for f in feats if f is not None]
        saved = True
        for folder, (ks, fs) in _by_folder(resolved, keys, done).items():
            # keep entries of files not in this run (e.g. a subset manifest) as well
            seen = set(ks)
            for k, f in cache.loaded.items():
                if k not in seen and Path(k.split("|", 1)[0]).parent == folder:
                    ks.append(k)
                    fs.append(f)
            saved &= cache.save(folder, ks, fs)
        if saved:
            cache.drop_parts()
    return [f for f in feats if f is not None]
