"""dedupe's per-image hashes kept on disk, so that an interrupted dedupe (or the dedupe
inside `split --group-by auto`) resumes where it stopped, and a second run decodes only
what changed. At 100,000 images the hashing is most of a dedupe's time.

One npz per folder beside the sibling features (`keypoints.cache_dir`), matched entry
by entry on path, size and mtime; while hashing, part files are written every
SAVE_EVERY images and when the work stops early, and merged away at the end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._util.files import atomic_write
from ..errors import LeukoError
from .hashing import HASH_SIDE, THUMB, ImageHashes
from .keypoints import folder_file, new_part, part_files

SAVE_EVERY = 20_000  # hashing is quick: this many images is well under a minute's work


def _main_file(folder: str) -> Path:
    return folder_file("hashes", folder)


def _read(f: Path) -> dict[str, ImageHashes]:
    try:
        with np.load(f, allow_pickle=False) as z:
            keys, shas, sizes = z["keys"], z["shas"], z["sizes"]
            thumbs, gray = z["thumbs"], z["gray"]
    except (OSError, ValueError, KeyError, EOFError):
        return {}  # a damaged cache is only a slower run
    if thumbs.shape[1:] != (THUMB, THUMB, 3) or gray.shape[1:] != (HASH_SIDE, HASH_SIDE):
        return {}
    return {str(k): ImageHashes(str(s), int(w), int(h), t, g)
            for k, s, (w, h), t, g in zip(keys, shas, sizes, thumbs, gray, strict=True)}


def _write(path: Path, entries: dict[str, ImageHashes]) -> bool:
    def write(tmp: Path) -> None:
        hs = list(entries.values())
        with open(tmp, "wb") as fh:  # a file, not a name: np.savez would append ".npz"
            np.savez(
                fh,
                keys=np.array(list(entries), dtype=str),
                shas=np.array([h.sha256 for h in hs], dtype=str),
                sizes=np.array([(h.width, h.height) for h in hs], np.int64).reshape(-1, 2),
                thumbs=np.array([h.thumb for h in hs], np.uint8).reshape(-1, THUMB, THUMB, 3),
                gray=np.array([h.gray for h in hs], np.uint8).reshape(-1, HASH_SIDE, HASH_SIDE),
            )

    try:
        atomic_write(path, write)
    except LeukoError:
        return False  # read-only home: the images are simply decoded again next time
    return True


class HashCache:
    """What earlier runs hashed, for the folders of one run, and what this run adds."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.keys = [_key(p) for p in paths]
        self.folders = {_folder(k) for k in self.keys if k}
        self.loaded: dict[str, ImageHashes] = {}
        self.parts: list[Path] = []
        for folder in self.folders:
            main = _main_file(folder)
            parts = part_files(main)
            self.parts += parts
            for f in [main, *parts]:
                if f.exists():
                    self.loaded.update(_read(f))
        self.new: dict[str, ImageHashes] = {}
        self._pending: dict[str, ImageHashes] = {}

    def get(self, i: int) -> ImageHashes | None:
        return self.loaded.get(self.keys[i]) if self.keys[i] else None

    def add(self, i: int, hashes: ImageHashes) -> None:
        if self.keys[i]:
            self.new[self.keys[i]] = self._pending[self.keys[i]] = hashes
            if len(self._pending) >= SAVE_EVERY:
                self.flush()

    def flush(self) -> None:
        """The hashes added since the last flush, into one part file per folder."""
        for folder, entries in _by_folder(self._pending).items():
            part = new_part(_main_file(folder))
            if _write(part, entries):
                self.parts.append(part)
        self._pending = {}

    def save(self) -> None:
        """Each folder's entries (earlier and new) into its one file; parts removed."""
        if not self.new and not self.parts:
            return
        current = set(self.keys)
        # an entry whose file changed or went away can never match again: dropped, so the
        # cache keeps one entry per file instead of growing with every edit
        merged = {k: h for k, h in {**self.loaded, **self.new}.items()
                  if k in current or _key(Path(k.split("|", 1)[0])) == k}
        if all(_write(_main_file(folder), entries)
               for folder, entries in _by_folder(merged).items() if folder in self.folders):
            for part in self.parts:
                part.unlink(missing_ok=True)


def _key(path: Path) -> str:
    """Absolute path, size and mtime; os.path, not Path.resolve: at 100,000 files the
    symlink walk alone took seconds."""
    try:
        st = os.stat(path)
    except OSError:
        return ""  # unreadable: hash_image says why, and nothing is cached
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _folder(key: str) -> str:
    return os.path.dirname(key.split("|", 1)[0])


def _by_folder(entries: dict[str, ImageHashes]) -> dict[str, dict[str, ImageHashes]]:
    out: dict[str, dict[str, ImageHashes]] = {}
    for k, h in entries.items():
        out.setdefault(_folder(k), {})[k] = h
    return out

