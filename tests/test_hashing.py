"""Image hashes: the hash proposes, pixels decide; flips and turns cost no decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukocli._util.bits import popcount
from leukocli.curation.hashing import (
    HASH_SIDE,
    THUMB,
    coarse_features,
    correlation,
    dihedral,
    fine_features,
    hash_image,
    phash,
    phash_variants,
    pixel_digest,
)


def _texture(seed: int, size: int = HASH_SIDE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def test_popcount_counts_bits_of_uint64() -> None:
    x = np.array([0, 1, 0xFF, 2**63, 2**64 - 1], dtype=np.uint64)
    assert popcount(x).tolist() == [0, 1, 8, 1, 64]


def test_phash_of_a_transform_is_the_matching_variant() -> None:
    """Variant k of an image equals the plain hash of the image under transform k."""
    gray = np.stack([_texture(1), _texture(2)])
    variants = phash_variants(gray, transforms=True)
    assert variants.shape == (2, 8)
    for k in range(8):
        turned = np.ascontiguousarray(dihedral(gray, k))
        np.testing.assert_array_equal(phash(turned), variants[:, k])
    assert phash_variants(gray, transforms=False).shape == (2, 1)


def test_phash_is_stable_under_brightness_and_far_between_pictures() -> None:
    a, b = _texture(3), _texture(4)
    brighter = np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)
    ha, hb, hbright = phash(np.stack([a, b, brighter]))
    assert popcount(np.array([ha ^ hbright]))[0] <= 4
    assert popcount(np.array([ha ^ hb]))[0] > 10


def test_pixel_features_correlate_copies_not_different_pictures() -> None:
    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, (THUMB, THUMB, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (THUMB, THUMB, 3), dtype=np.uint8)
    shifted_colour = np.clip(thumb.astype(int) + 15, 0, 255).astype(np.uint8)
    f = fine_features(np.stack([thumb, shifted_colour, other]))
    same = correlation(f[[0]], f[[1]])[0]
    different = correlation(f[[0]], f[[2]])[0]
    assert same > 0.97 > different
    c = coarse_features(np.stack([thumb, thumb]))
    assert c.shape == (2, 16, 16)
    assert correlation(c[[0]], c[[1]])[0] == pytest.approx(1.0, abs=1e-4)


def test_hash_image_and_pixel_digest(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a.bmp")
    fa = hash_image(tmp_path / "a.png")
    fb = hash_image(tmp_path / "a.bmp")
    assert not isinstance(fa, str) and not isinstance(fb, str)
    assert (fa.width, fa.height) == (40, 30)
    assert fa.thumb.shape == (THUMB, THUMB, 3) and fa.gray.shape == (HASH_SIDE, HASH_SIDE)
    assert fa.sha256 != fb.sha256  # different bytes ...
    assert pixel_digest(tmp_path / "a.png") == pixel_digest(tmp_path / "a.bmp")  # same pixels
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    assert isinstance(hash_image(tmp_path / "bad.jpg"), str)
    assert hash_image(tmp_path / "missing.png") == "file not found"
    assert pixel_digest(tmp_path / "bad.jpg") is None
