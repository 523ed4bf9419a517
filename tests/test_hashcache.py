"""dedupe's hash cache: a second dedupe decodes nothing and finds the same, a changed
file is decoded again, and an interrupted dedupe resumes from what it had hashed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from leukocli.curation import dedupe, hashcache, keypoints
from leukocli.curation.dedupe import find_duplicates
from leukocli.curation.hashing import ImageHashes, hash_image
from leukocli.data.synth import make_dataset


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEUKO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture()
def data(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    src = tmp_path_factory.getbasetemp() / "hashcache-src"
    if not src.exists():
        make_dataset(src, per_class=3, siblings=2, seed=5, plant=True)
        for name in ("sources.csv", "planted.json"):
            (src / name).unlink()
    shutil.copytree(src, tmp_path / "data")
    return tmp_path / "data"


def _counting(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[Path]:
    calls: list[Path] = []

    def counted(path: Path) -> ImageHashes | str:
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt
        calls.append(path)
        return hash_image(path)

    monkeypatch.setattr(dedupe, "hash_image", counted)
    return calls


def _same(a: Any, b: Any) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds")
    db.pop("seconds")
    return bool(da == db)


def test_second_dedupe_decodes_nothing_and_finds_the_same(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = find_duplicates(data)
    assert first.groups  # the planted copies
    unreadable = sorted(data / rel for rel in first.unreadable)  # never cached
    calls = _counting(monkeypatch)
    again = find_duplicates(data)
    assert sorted(calls) == unreadable and _same(first, again)
    changed = sorted(data.rglob("*.jpeg"))[0]
    changed.write_bytes(changed.read_bytes() + b"\0")  # new size: hashed again
    calls.clear()
    find_duplicates(data)
    assert sorted(calls) == sorted([changed, *unreadable])


def test_interrupted_dedupe_resumes_from_what_it_hashed(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashcache, "SAVE_EVERY", 3)
    n = len([f for f in data.rglob("*") if f.is_file()])
    fresh = find_duplicates(data)
    shutil.rmtree(keypoints.cache_dir())
    _counting(monkeypatch, fail_after=n // 2)
    with pytest.raises(KeyboardInterrupt):
        find_duplicates(data)
    assert list(keypoints.cache_dir().glob("hashes-*.part-*.npz"))
    calls = _counting(monkeypatch)
    resumed = find_duplicates(data)
    assert len(calls) <= n - n // 2 + 3  # the threads may have run a little ahead
    assert _same(fresh, resumed)
    assert not list(keypoints.cache_dir().glob("hashes-*.part-*.npz"))


def test_entries_of_changed_or_deleted_files_are_dropped(data: Path) -> None:
    """The cache holds one entry per file that is still there as it was: an edited or
    deleted image leaves nothing behind to be loaded by every later dedupe."""
    find_duplicates(data)
    images = sorted(p for p in data.rglob("*") if p.suffix in (".jpeg", ".jpg", ".png"))
    gone, edited = images[0], images[1]
    gone.unlink()
    edited.write_bytes(edited.read_bytes() + b"\0")  # another size: another key
    find_duplicates(data)
    keys = [k for f in keypoints.cache_dir().glob("hashes-*.npz")
            for k in hashcache._read(f)]
    paths = [k.split("|", 1)[0] for k in keys]
    assert len(paths) == len(set(paths))  # one entry per file
    assert str(gone) not in paths
    assert all(hashcache._key(Path(p)) == k for p, k in zip(paths, keys, strict=True))
    assert str(edited) in paths
