"""Image hashes for duplicate search: byte and pixel digests, DCT pHash, thumbnails.

Each image is decoded once (JPEG draft mode, so a 320x240 file decodes at 1/4 scale)
into a small square RGB thumbnail. The 64-bit pHash of all eight dihedral variants
(flips, quarter turns, transpositions) comes from that thumbnail, so matching a
flipped or rotated copy costs no extra decode, and the thumbnail is kept to confirm
candidate pairs pixel by pixel: on stained smears (a pink field and one purple blob)
short hashes of different cells collide, so a hash may only propose, never decide.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.images import to_rgb

THUMB = 48  # side of the RGB thumbnail kept per image for verification (uint8: 6.9 kB)
HASH_SIDE = 32  # side of the grayscale image the DCT pHash is computed on
N_TRANSFORMS = 8

# Transform k maps an (..., H, W[, C]) array to rot90(a, k % 4), mirrored left-right when k >= 4.
TRANSFORM_NAMES: tuple[str, ...] = (
    "identity", "rot90", "rot180", "rot270", "hflip", "rot90+hflip", "rot180+hflip", "rot270+hflip"
)


@dataclass
class ImageHashes:
    """What one decode of one image yields."""

    sha256: str
    width: int
    height: int
    thumb: np.ndarray  # (THUMB, THUMB, 3) uint8
    gray: np.ndarray  # (HASH_SIDE, HASH_SIDE) uint8 luminance, for the pHash


def dihedral(a: np.ndarray, k: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """The k-th of the eight dihedral transforms of `a` over `axes` (see TRANSFORM_NAMES)."""
    out = np.rot90(a, k % 4, axes=axes)
    if k >= 4:
        out = np.flip(out, axis=axes[1])
    return out


def swaps_axes(k: int) -> bool:
    """True when transform k exchanges height and width (a quarter turn)."""
    return k % 2 == 1


def hash_image(path: Path) -> ImageHashes | str:
    """Hash the bytes and decode a thumbnail; return the reason instead when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            im.draft("RGB", (THUMB, THUMB))
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has no pixels"
            rgb = to_rgb(im)
            if rgb.size != im.size:  # turned by its EXIF orientation
                width, height = height, width
        thumb = rgb.resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=2.0)
        arr = np.asarray(thumb, dtype=np.uint8)
        gray = np.asarray(
            thumb.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.uint8
        )
    except UnidentifiedImageError:
        return "not an image (format not recognised)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt image ({exc})"
    except Exception as exc:  # Pillow raises a zoo of types on hostile input
        return f"unreadable ({type(exc).__name__}: {exc})"
    return ImageHashes(digest, width, height, arr, gray)


def pixel_digest(path: Path) -> str | None:
    """sha256 of the fully decoded pixels, so a PNG and a BMP of one picture compare equal."""
    try:
        with Image.open(path) as im:
            im.load()
            rgba = to_rgb(im, "RGBA")
        h = hashlib.sha256(f"{rgba.width}x{rgba.height}:".encode())
        h.update(rgba.tobytes())
        return h.hexdigest()
    except Exception:  # unreadable at full size: it simply gets no pixel identity
        return None


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(HASH_SIDE)
_BITS = (1 << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def phash(gray: np.ndarray) -> np.ndarray:
    """64-bit DCT pHashes of (N, HASH_SIDE, HASH_SIDE) images, as uint64.

    The 8x8 lowest frequencies without the DC term (which only says 'how bright') and
    with the (0, 8) term instead, each bit set when the coefficient exceeds the median.
    """
    d = _DCT[:9].astype(np.float32)
    coef = d @ gray.astype(np.float32) @ d.T  # (N, 9, 9): only the low frequencies are needed
    n = len(gray)
    low = np.concatenate([coef[:, :8, :8].reshape(n, 64)[:, 1:], coef[:, 0, 8:9]], axis=1)
    med = np.median(low, axis=1, keepdims=True)
    bits = (low > med).astype(np.uint64)
    return (bits * _BITS).sum(axis=1, dtype=np.uint64)


def phash_variants(gray: np.ndarray, transforms: bool) -> np.ndarray:
    """(N, 8) hashes of (N, HASH_SIDE, HASH_SIDE) images under every dihedral transform
    (or (N, 1) without transforms)."""
    ks = range(N_TRANSFORMS) if transforms else range(1)
    return np.stack([phash(np.ascontiguousarray(dihedral(gray, k))) for k in ks], axis=1)


def _highpass(x: np.ndarray) -> np.ndarray:
    """x minus its 3x3 box blur over axes 1, 2: keeps the red-cell texture, drops the blob.

    Every smear is a pink field around one purple blob, so plain correlations of any two
    smears are high; the fine texture is what tells two pictures apart.
    """
    h, w = x.shape[1], x.shape[2]
    pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
    p = np.pad(x, pad, mode="edge")
    blur = sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0
    return x - blur


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit RMS per image and channel (axes 1, 2), so colour shifts cancel out."""
    x = x - x.mean(axis=(1, 2), keepdims=True)
    rms = np.sqrt((x * x).mean(axis=(1, 2), keepdims=True))
    return np.divide(x, rms, out=np.zeros_like(x), where=rms > 1e-3)


def coarse_features(thumbs: np.ndarray) -> np.ndarray:
    """(N, 16, 16) standardised high-pass luminance at 16x16: a cheap first confirmation."""
    g = thumbs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    f = THUMB // 16
    g = g.reshape(len(g), 16, f, 16, f).mean(axis=(2, 4))
    return _standardise(_highpass(g)).astype(np.float32)


def fine_features(thumbs: np.ndarray) -> np.ndarray:
    """(N, THUMB, THUMB, 3) standardised high-pass colour thumbnails for the final check."""
    return _standardise(_highpass(thumbs.astype(np.float32))).astype(np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise mean product of standardised feature arrays (Pearson correlation)."""
    n = len(a)
    a2 = a.reshape(n, -1)
    b2 = b.reshape(n, -1)
    return np.einsum("ij,ij->i", a2, b2) / a2.shape[1]
