"""dedupe's candidate search at scale: the wide, bit-balanced hash index and the coarse
bound skip work only, so they find exactly what the plain search found."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from leukocli._util.bits import popcount
from leukocli.curation import candidates
from leukocli.curation.candidates import (
    balanced_bits,
    iter_candidates,
    permute_bits,
    unique_rows,
)
from leukocli.curation.dedupe import COARSE_MIN, find_duplicates
from leukocli.curation.hashing import coarse_features, dihedral
from leukocli.curation.pixelcheck import CoarseBound, coarse_check
from leukocli.data.synth import make_dataset

_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def _skewed_hashes(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Clustered hashes with dead and biased bits, as smears give (bits 1, 3, 5, .. ~0)."""
    seeds = rng.integers(0, 2**63, size=12, dtype=np.uint64)
    dead = np.uint64(sum(1 << b for b in (1, 3, 5, 15, 31, 47, 63)))
    cols = []
    for _ in range(k):
        noise = np.zeros(n, dtype=np.uint64)
        for b in range(64):
            noise |= (rng.random(n) < 0.08).astype(np.uint64) << np.uint64(b)
        cols.append((seeds[rng.integers(0, 12, n)] ^ noise) & ~dead)
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("t", [0, 1, 3, 4, 5, 8, 10, 11, 12, 16, 32])
def test_index_matches_brute_force_on_skewed_bits(t: int) -> None:
    rng = np.random.default_rng(t)
    hashes = _skewed_hashes(rng, 400, 3)
    rows = list(iter_candidates(hashes, t, chunk=97))
    got = {tuple(r) for r in unique_rows(np.concatenate(rows))[:, :3].tolist()} if rows else set()
    assert len(got) == sum(len(r) for r in rows)  # a pair near both ways still comes once
    want = set()
    for k in range(hashes.shape[1]):
        d = popcount(hashes[:, k][:, None] ^ hashes[:, 0][None, :])
        for i, j in zip(*np.nonzero(d <= t), strict=True):
            if i != j:
                want.add((int(i), int(j), k) if i < j else (int(j), int(i), _INVERSE[k]))
    assert got == want


@pytest.mark.parametrize("t", range(33))
def test_segment_radii_keep_the_pigeonhole(t: int) -> None:
    """Hashes more than t apart differ by more than r_s in some segment s only if the
    radii r_s + 1 add up to t + 1: then no pair within t can slip through all of them."""
    segs, radii = candidates.segments(t)
    assert sum(w for _, w in segs) == 64 and len(radii) == len(segs)
    assert sum(r + 1 for r in radii) == t + 1 and max(radii) - min(radii) <= 1


def test_the_most_crowded_segment_gets_the_smallest_radius() -> None:
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**63, size=500, dtype=np.uint64)
    base &= ~np.uint64(0x3FFFFF << 21)  # the middle segment: one bucket
    segs, radii = candidates.segments(10)
    assert candidates.assign_radii(base, segs, radii) == [3, 2, 3]


def test_balanced_bits_is_a_permutation_that_keeps_distances() -> None:
    rng = np.random.default_rng(0)
    hashes = _skewed_hashes(rng, 200, 2)
    segs, _ = candidates.segments(10)
    order = balanced_bits(hashes[:, 0], segs)
    assert sorted(order.tolist()) == list(range(64))
    moved = permute_bits(hashes, order)
    assert (popcount(moved[:, 1] ^ moved[:, 0]) == popcount(hashes[:, 1] ^ hashes[:, 0])).all()
    # the seven dead bits are dealt over the three segments, not piled into one
    dead = {1, 3, 5, 15, 31, 47, 63}
    per_seg = [sum(order[p] in dead for p in range(s, s + w)) for s, w in segs]
    assert max(per_seg) - min(per_seg) <= 1


def test_coarse_bound_never_rejects_a_pair_that_passes() -> None:
    """Copies made noisier step by step straddle every threshold; the bound may only
    keep too many, never drop one that coarse_check passes."""
    rng = np.random.default_rng(2)
    base = gaussian_filter(rng.normal(128, 50, (40, 48, 48, 3)), (0, 1.5, 1.5, 0))
    noisy = [base + gaussian_filter(rng.normal(0, s, base.shape), (0, 1, 1, 0))
             for s in (2, 5, 8, 12, 20)]
    thumbs = np.concatenate([base, *noisy]).clip(0, 255).astype(np.uint8)
    thumbs[-1] = 128  # a flat picture has zero features
    coarse = coarse_features(thumbs)
    n = len(coarse)
    ks = list(range(8))
    flipped = np.stack([dihedral(c, 5, axes=(0, 1)) for c in coarse[:40]])
    coarse = np.concatenate([coarse, flipped])  # rows 240..279: base under transform 5
    bound = CoarseBound(coarse, ks)
    i, j = np.meshgrid(np.arange(len(coarse)), np.arange(len(coarse)), indexing="ij")
    keep = i < j
    for k in ks:
        cand = np.stack([i[keep], j[keep], np.full(keep.sum(), k), np.zeros(keep.sum(), int)], 1)
        sims = coarse_check(coarse, cand)
        for minimum in (0.5, 0.8, COARSE_MIN, 0.95):
            passes = sims >= minimum
            assert not (passes & ~bound.may_pass(cand, minimum)).any(), (k, minimum)
        if k == 0:
            assert (sims >= COARSE_MIN).sum() > 40  # the test has pairs near the threshold
    assert n == 240


def _plain_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """dedupe as it was: 16-bit segments of the raw bits, every candidate fully checked."""
    def old_segments(threshold: int) -> tuple[list[tuple[int, int]], list[int]]:
        m = threshold + 1 if threshold <= 3 else max(4, math.ceil((threshold + 1) / 3))
        bounds = [round(64 * s / m) for s in range(m + 1)]
        return [(bounds[s], bounds[s + 1] - bounds[s]) for s in range(m)], [threshold // m] * m

    monkeypatch.setattr(candidates, "segments", old_segments)
    monkeypatch.setattr(candidates, "balanced_bits",
                        lambda base, segs: np.arange(64, dtype=np.int64))
    monkeypatch.setattr(CoarseBound, "may_pass",
                        lambda self, cand, minimum: np.ones(len(cand), dtype=bool))


def _report(root: Path) -> str:
    d = find_duplicates(root).to_dict()
    d.pop("seconds")
    return json.dumps(d, sort_keys=True)


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain of six near copies (each verifies only with its neighbours, not with the
    ends), one of them mirrored, among twelve unrelated textured pictures."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("chain")
    (root / "A").mkdir()
    (root / "B").mkdir()
    img = gaussian_filter(rng.normal(128, 60, (48, 48, 3)), (1, 1, 0))
    for t in range(6):
        arr = img.clip(0, 255).astype(np.uint8)
        if t == 3:
            arr = arr[:, ::-1]
        Image.fromarray(np.ascontiguousarray(arr)).save(root / "A" / f"chain{t}.png")
        img = img + gaussian_filter(rng.normal(0, 9, img.shape), (1, 1, 0))
    for u in range(12):
        other = gaussian_filter(rng.normal(128, 60, (48, 48, 3)), (1, 1, 0))
        Image.fromarray(other.clip(0, 255).astype(np.uint8)).save(root / "B" / f"other{u}.png")
    return root


def test_chain_of_near_copies_is_one_group(chain_dir: Path) -> None:
    f = find_duplicates(chain_dir)
    assert [sorted(g.files) for g in f.groups] == [[f"A/chain{t}.png" for t in range(6)]]
    g = f.groups[0]
    assert g.match == "near" and g.similarity < 0.99 and "hflip" in g.transforms
    assert f.pairs == 5  # a spanning tree: the ends are linked through the middle


@pytest.mark.parametrize("which", ["chain", "planted"])
def test_same_report_as_the_plain_search(
    which: str, chain_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if which == "chain":
        root = chain_dir
    else:
        root = tmp_path / "data"
        make_dataset(root, per_class=6, siblings=2, seed=3, plant=True)
    fast = _report(root)
    _plain_search(monkeypatch)
    assert _report(root) == fast


def test_aspect_filter_shortcut_keeps_only_what_the_full_test_keeps() -> None:
    """All shapes alike and no quarter turn: every row passes, and is returned as is;
    a quarter turn of a non-square shape is still dropped."""
    cand = np.array([[0, 1, 0, 3], [1, 2, 2, 5], [0, 2, 4, 1]], dtype=np.int64)
    same = np.log(np.full(3, 240 / 320))
    assert candidates.aspect_filter(cand, same) is cand
    turned = np.array([[0, 1, 1, 3], [1, 2, 0, 5]], dtype=np.int64)
    assert candidates.aspect_filter(turned, same).tolist() == [[1, 2, 0, 5]]
    mixed = np.log(np.array([0.75, 0.75, 0.9]))
    assert candidates.aspect_filter(cand, mixed).tolist() == [[0, 1, 0, 3]]
