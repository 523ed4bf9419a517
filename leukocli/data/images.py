"""Is this file an image leuko can use? Checked in parallel, with one line for huge ones.

'decode' decodes at reduced scale (JPEG draft mode), which catches truncated files for
a fraction of a full decode; 'header' only identifies the format.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from .._util.parallel import workers
from .._util.progress import SILENT, Reporter

CheckMode = Literal["decode", "header", "none"]

_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits a sample
_ORIENTATION = 0x0112  # the EXIF tag a phone sets instead of turning the pixels


def to_rgb(im: Image.Image, mode: str = "RGB") -> Image.Image:
    """An opened image as a person sees it, in 8-bit RGB: turned as its EXIF orientation
    says, 16-bit (and 32-bit) samples scaled to 8 bits rather than clipped (Pillow's
    convert("RGB") turns a 16-bit grey image white), alpha and palettes dropped.
    Every place leuko reads pixels with Pillow goes through here, so a photo is the same
    picture to the loader, predict, count, dedupe and the exported runtimes. `mode`
    "RGBA" keeps the alpha (dedupe's pixel identity)."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode in _DEEP_MODES:
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "F" else max(float(arr.max()), 1e-12)
        if im.mode == "I" and arr.max() > 65535:
            top = float(arr.max())
        grey = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert(mode)
    return im if im.mode == mode else im.convert(mode)


def open_rgb(path: Path | str) -> Image.Image:
    """The image at `path` as to_rgb gives it (decoded; the file is closed again)."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def needs_pillow(path: Path | str) -> bool:
    """True when TensorFlow's decoders would read the file differently from to_rgb: a
    TIFF (they cannot read it), samples deeper than 8 bits in a mode TensorFlow does not
    scale, or an EXIF orientation (they ignore it). Reads the header only."""
    try:
        with Image.open(path) as im:
            if im.format == "TIFF" or (im.mode in _DEEP_MODES and im.format != "PNG"):
                return True
            return im.getexif().get(_ORIENTATION, 1) not in (0, 1)
    except Exception:  # noqa: BLE001 - unreadable: TensorFlow's decoder reports it
        return False


def check_image(path: Path, mode: CheckMode = "decode") -> str | None:
    """Return why `path` cannot be used as an image, or None when it can.

    'decode' decodes at reduced scale (JPEG draft mode), which catches truncated files
    for a fraction of a full decode; 'header' only identifies the format.
    """
    return _check(path, mode)[0]


def _check(path: Path, mode: CheckMode) -> tuple[str | None, bool]:
    """(reason or None, whether Pillow would call it a possible decompression bomb)."""
    if mode == "none":
        return None, False
    return _open_and_check(path, mode)


def _open_and_check(path: Path, mode: CheckMode) -> tuple[str | None, bool]:
    big = False
    try:
        with Image.open(path) as im:
            limit = Image.MAX_IMAGE_PIXELS
            big = bool(limit) and im.width * im.height > (limit or 0)
            if mode == "header":
                im.verify()
                return None, big
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has no pixels", big
    except FileNotFoundError:
        gone = "broken symbolic link (its target is missing)" if path.is_symlink() else (
            "file not found"
        )
        return gone, False
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return f"too large to decode safely (over {limit:,} pixels)", False
    except UnidentifiedImageError:
        return "not an image (format not recognised)", False
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt
        return f"corrupt image ({exc})", False
    except Exception as exc:  # Pillow raises a zoo of types on hostile input
        return f"unreadable ({type(exc).__name__}: {exc})", False
    return None, big


def check_images(
    paths: Sequence[Path],
    mode: CheckMode = "decode",
    description: str = "checking images",
    reporter: Reporter = SILENT,
) -> list[str | None]:
    """Check many images in parallel (Pillow releases the GIL while decoding).

    Very large images (Pillow's decompression-bomb warning) stay usable and are named
    in one warning line instead of Pillow's two-line Python warning per file.
    """
    if mode == "none" or not paths:
        return [None] * len(paths)
    results: list[str | None] = []
    big: list[Path] = []
    # Pillow's own warning is replaced by the one line below; the filter is set here, in
    # the calling thread, because warnings.catch_warnings is not safe inside the workers
    with warnings.catch_warnings(), reporter.task(description, len(paths)) as advance, \
            ThreadPoolExecutor(workers()) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for path, (reason, bomb) in zip(
            paths, pool.map(lambda p: _check(p, mode), paths, chunksize=32), strict=True
        ):
            results.append(reason)
            if bomb and reason is None:
                big.append(path)
            advance()
    if big:
        reporter.warn(
            f"{len(big)} very large image(s) (over {Image.MAX_IMAGE_PIXELS:,} pixels, e.g. "
            f"{big[0].name}): usable, but slow to decode"
        )
    return results
