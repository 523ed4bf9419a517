"""Sibling discovery: views of one photo are linked, different photos are not, tiny or
featureless images stay alone without a crash, and the result is cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukocli._util.progress import Collecting
from leukocli.curation import keypoints, siblings, verify
from leukocli.curation.keypoints import compute_features, file_key
from leukocli.data.render import augment_view, render_smear


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEUKO_CACHE_DIR", str(tmp_path / "cache"))


def _views(tmp_path: Path) -> list[Path]:
    """Two smears, three augmented views each, plus a second, unrelated smear."""
    paths = []
    for s in range(2):
        rng = np.random.default_rng([9, s])
        base = render_smear("NEUTROPHIL", (120, 160), rng)
        for v in range(3):
            p = tmp_path / f"s{s}_v{v}.png"
            augment_view(base, rng).save(p)
            paths.append(p)
    return paths


def test_views_of_one_smear_are_linked_and_others_are_not(tmp_path: Path) -> None:
    paths = _views(tmp_path)
    feats = compute_features(paths, [file_key(p) for p in paths])
    assert verify._inliers(feats[0], feats[1]) >= verify.MIN_INLIERS
    assert verify._inliers(feats[0], feats[3]) < verify.MIN_INLIERS
    groups = siblings.discover_groups(paths, ["NEUTROPHIL"] * len(paths))
    assert len(set(groups[:3])) == 1 and len(set(groups[3:])) == 1
    assert groups[0] != groups[3]


def test_tiny_images_stay_alone_with_one_warning(tmp_path: Path) -> None:
    paths = _views(tmp_path)[:2]
    for name, size in (("one.png", (1, 1)), ("thin.png", (300, 2))):
        Image.new("RGB", size, (200, 100, 150)).save(tmp_path / name)
        paths.append(tmp_path / name)
    notes = Collecting()
    groups = siblings.discover_groups(paths, ["A"] * len(paths), reporter=notes)
    assert groups[0] == groups[1]
    assert len({groups[2], groups[3], groups[0]}) == 3
    assert len(notes.warnings) == 1 and "2 image(s) carry no keypoints" in notes.warnings[0]


def test_groups_are_cached_and_follow_file_changes(tmp_path: Path) -> None:
    paths = _views(tmp_path)
    labels = ["N"] * len(paths)
    first = siblings.discover_groups(paths, labels)
    notes = Collecting()
    assert siblings.discover_groups(paths, labels, reporter=notes) == first
    assert any("reused from cache" in m for m in notes.infos)
    Image.new("RGB", (120, 160), (10, 200, 10)).save(paths[0])  # the file changed
    notes = Collecting()
    again = siblings.discover_groups(paths, labels, reporter=notes)
    assert not any("reused from cache" in m for m in notes.infos)
    assert again[0] != again[1]


def test_cache_writes_take_a_unique_temporary_name(tmp_path: Path) -> None:
    """Two runs sharing the cache must never write one temporary file: a fixed name that
    another run holds (here a folder squatting on it) neither blocks the write nor is used."""
    paths = _views(tmp_path)
    labels = ["N"] * len(paths)
    gfile = siblings._groups_cache_file([file_key(p) for p in paths], labels)
    ffile = keypoints._FeatureCache(keypoints.cache_dir())._file(tmp_path.resolve())
    squatters = [gfile.with_suffix(".tmp"), ffile.with_suffix(".tmp.npz")]
    for squatter in squatters:
        squatter.mkdir(parents=True)
    siblings.discover_groups(paths, labels)
    assert gfile.is_file() and ffile.is_file()
    assert sorted(gfile.parent.iterdir()) == sorted([gfile, ffile, *squatters])  # no leftovers
    assert len(compute_features(paths, [file_key(p) for p in paths])) == len(paths)


def test_interrupted_extraction_resumes_from_its_part_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long split killed half-way must not start over: features extracted before the
    interrupt are on disk (SAVE_EVERY at a time, and the rest when it stops), the next
    run extracts only the others, gets the same features, and merges the parts away."""
    paths = _views(tmp_path)
    keys = [file_key(p) for p in paths]
    monkeypatch.setenv("LEUKO_WORKERS", "1")
    monkeypatch.setattr(keypoints, "SAVE_EVERY", 2)
    orb = keypoints._orb_features
    calls: list[str] = []

    def interrupted(path: str) -> keypoints.Features:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(path)
        return orb(path)

    monkeypatch.setattr(keypoints, "_orb_features", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compute_features(paths, keys)
    assert len(list(keypoints.cache_dir().glob("*.part-*.npz"))) == 2  # 2, then 1 at Ctrl-C

    calls.clear()
    monkeypatch.setattr(keypoints, "_orb_features", lambda p: calls.append(p) or orb(p))
    resumed = compute_features(paths, keys)
    assert calls == [str(p.resolve()) for p in paths[3:]]
    assert not list(keypoints.cache_dir().glob("*.part-*.npz"))
    fresh = [orb(str(p)) for p in paths]
    for got, want in zip(resumed, fresh, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    calls.clear()
    compute_features(paths, keys)  # all from the merged folder file now
    assert calls == []


class _Counting(Collecting):
    """Records every task's total and each advance, to check the bars stay honest."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, tuple[int | None, list[int]]] = {}

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        steps: list[int] = []
        self.tasks[description] = (total, steps)
        yield lambda n=1, **_: steps.append(n)


@pytest.mark.parametrize("n_workers", ["1", "2"])
def test_verifying_reports_progress_within_a_class(
    monkeypatch: pytest.MonkeyPatch, n_workers: str
) -> None:
    """One class of 100,000 images is verified in one job; its bar must still move (and
    end at its total), in the workers too, or the rate and time left mean nothing."""
    monkeypatch.setenv("LEUKO_WORKERS", n_workers)
    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)) * 2
    members = {"A": list(range(200)), "B": list(range(200, 300))}
    shortlists = {c: [[(i + 1) % len(m)] for i in range(len(m))] for c, m in members.items()}
    bars = _Counting()
    roots = verify.verify_all([empty] * 300, members, lambda: shortlists, bars)  # type: ignore[list-item]
    assert roots == {"A": list(range(200)), "B": list(range(100))}
    total, steps = bars.tasks["verifying siblings"]
    assert total == sum(steps) == 300
    assert len([s for s in steps if s]) >= 300 // verify._STEP


def test_a_killed_splits_spill_folder_is_swept_and_a_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 skips `finally`: the next split removes a dead process's verify folder
    (a whole feature set), never a live one's, and its own when done."""
    monkeypatch.setenv("LEUKO_CACHE_DIR", str(tmp_path))
    root = keypoints.cache_dir()
    dead = root / "verify-999999999-abc"  # no such process
    live = root / "verify-1-abc"  # pid 1 is always there
    for d in (dead, live):
        d.mkdir(parents=True)
        (d / "class-0.npz").write_bytes(b"x")
    with verify._spilled([], {}) as jobs:
        assert jobs == {}
        mine = [d for d in root.glob("verify-*") if d not in (dead, live)]
        assert len(mine) == 1
    assert not dead.exists() and live.exists() and not mine[0].exists()
