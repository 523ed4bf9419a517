"""Drawing synthetic stained smears: red cells, platelets and white cells of four classes.

Each image is a pink field of pale red cells with white cells drawn so the four classes
differ the way a hematologist tells them apart (nucleus shape, cell size, cytoplasm
colour) and stay learnable by a small CNN at 75x75. Pure numpy and Pillow: the pixels
for the demo data and every test fixture, with no files and no printing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ..errors import LeukoError

CLASSES: tuple[str, ...] = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
JPEG_QUALITY = 92
NEAR_TRANSFORMS: tuple[str, ...] = ("jpeg_quality", "resize", "colour_shift", "hflip", "rot90")
MIN_SIZE = 32

# Colours are RGB in 0..255, before per-image stain jitter.
# float32 throughout: a float64 constant would silently promote every patch.
_BACKGROUND = np.array([238.0, 224.0, 222.0], dtype=np.float32)
_RBC = np.array([214.0, 148.0, 158.0], dtype=np.float32)
_RBC_CENTRE = np.array([229.0, 192.0, 197.0], dtype=np.float32)
_PLATELET = np.array([150.0, 100.0, 185.0], dtype=np.float32)


_SOFTEN = ImageFilter.Kernel((3, 3), [1, 2, 1, 2, 5, 2, 1, 2, 1], scale=17)


@dataclass(frozen=True)
class _CellStyle:
    radius: tuple[float, float]  # cell radius range at 240x320, pixels
    cytoplasm: tuple[float, float, float]
    nucleus: tuple[float, float, float]
    chromatin: float  # strength of the nucleus texture


_STYLES: dict[str, _CellStyle] = {
    "NEUTROPHIL": _CellStyle((31, 37), (226, 208, 224), (118, 68, 172), 0.14),
    "EOSINOPHIL": _CellStyle((32, 38), (236, 168, 150), (112, 62, 166), 0.12),
    "LYMPHOCYTE": _CellStyle((21, 26), (150, 166, 228), (68, 42, 148), 0.08),
    "MONOCYTE": _CellStyle((41, 48), (184, 188, 216), (128, 88, 182), 0.18),
}


# --------------------------------------------------------------------------- drawing
def _patch(
    h: int, w: int, cy: float, cx: float, reach: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Slices of the canvas around (cy, cx) and the local coordinates of their pixels."""
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    return (slice(y0, y1), slice(x0, x1)), ys, xs


def _rotate(ys: np.ndarray, xs: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    return c * ys - s * xs, s * ys + c * xs


def _clip01(x: np.ndarray) -> np.ndarray:
    # np.clip carries a large per-call overhead on the small patches drawn here
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return _clip01(0.5 - sdf)


def _ellipse_sdf(v: np.ndarray, u: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance (pixels) to an axis-aligned ellipse with semi-axes a, b."""
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (rho - 1.0) * min(a, b)


def _circle_sdf(v: np.ndarray, u: np.ndarray, cv: float, cu: float, r: float) -> np.ndarray:
    return np.sqrt((v - cv) ** 2 + (u - cu) ** 2) - r


def _capsule_sdf(
    v: np.ndarray, u: np.ndarray, p: tuple[float, float], q: tuple[float, float], r: float
) -> np.ndarray:
    """Distance to a thick segment from p to q (the strands that join nuclear lobes)."""
    pv, pu = p
    dv, du = q[0] - pv, q[1] - pu
    length2 = dv * dv + du * du or 1e-6
    t = _clip01(((v - pv) * dv + (u - pu) * du) / length2)
    return np.sqrt((v - pv - t * dv) ** 2 + (u - pu - t * du) ** 2) - r


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (bilinear upsampling of a coarse random grid)."""
    h, w = shape
    gh, gw = max(2, h // cells), max(2, w // cells)
    grid = (rng.random((gh, gw)) * 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.float32) / 255.0


def _nucleus_sdf(
    label: str, v: np.ndarray, u: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance to the nucleus, in the cell's own rotated frame."""
    if label == "NEUTROPHIL":
        lobes = int(rng.integers(3, 6))
        arc = math.radians(rng.uniform(200, 280))
        start = rng.uniform(0, 2 * math.pi)
        ring = radius * rng.uniform(0.4, 0.46)
        centres = []
        for i in range(lobes):
            t = start + arc * i / (lobes - 1)
            jitter = radius * 0.04
            centres.append(
                (
                    ring * math.sin(t) + rng.normal(0, jitter),
                    ring * math.cos(t) + rng.normal(0, jitter),
                )
            )
        sdf = np.full(v.shape, np.inf, dtype=np.float32)
        for i, (cv, cu) in enumerate(centres):
            r = radius * rng.uniform(0.29, 0.34)
            sdf = np.minimum(sdf, _circle_sdf(v, u, cv, cu, r))
            if i:
                sdf = np.minimum(sdf, _capsule_sdf(v, u, centres[i - 1], (cv, cu), radius * 0.07))
        return sdf
    if label == "EOSINOPHIL":
        off = radius * rng.uniform(0.36, 0.42)
        r1, r2 = radius * rng.uniform(0.32, 0.38), radius * rng.uniform(0.32, 0.38)
        bend = radius * rng.uniform(-0.12, 0.12)
        left, right = (bend, -off), (bend, off)
        sdf = np.minimum(_circle_sdf(v, u, *left, r1), _circle_sdf(v, u, *right, r2))
        return np.minimum(sdf, _capsule_sdf(v, u, left, right, radius * 0.08))
    if label == "LYMPHOCYTE":
        dv, du = rng.normal(0, radius * 0.05, 2)
        a = radius * rng.uniform(0.8, 0.86)
        return _ellipse_sdf(v - dv, u - du, a, a * rng.uniform(0.92, 1.0))
    # MONOCYTE: a large ellipse with a bite taken out of one side (kidney / horseshoe)
    a, b = radius * rng.uniform(0.66, 0.74), radius * rng.uniform(0.48, 0.56)
    body = _ellipse_sdf(v, u, a, b)
    bite = _circle_sdf(v, u, b * rng.uniform(0.95, 1.15), 0.0, radius * rng.uniform(0.3, 0.38))
    return np.maximum(body, -bite)


def _draw_rbc(
    canvas: np.ndarray,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    r: float,
    tint: np.ndarray,
) -> None:
    """A red cell: a disc that absorbs light, paler in its biconcave centre."""
    h, w, _ = canvas.shape
    got = _patch(h, w, cy, cx, r * 1.05)
    if got is None:
        return
    sl, ys, xs = got
    v, u = _rotate(ys, xs, rng.uniform(0, math.pi))
    ecc = rng.uniform(0.82, 1.0)
    rho = np.sqrt((u / r) ** 2 + (v / (r * ecc)) ** 2)
    alpha = _coverage((rho - 1.0) * (r * ecc)) * np.float32(rng.uniform(0.8, 0.95))
    pale = _clip01(1.0 - rho / rng.uniform(0.45, 0.6))[..., None]
    rim = _clip01((rho - 0.8) / 0.2)[..., None] * 0.08  # darker edge of the disc
    colour = (_RBC + (_RBC_CENTRE - _RBC) * pale) * (1.0 - rim) * tint
    transmit = colour / _BACKGROUND
    canvas[sl] *= 1.0 - alpha[..., None] * (1.0 - transmit)


def _draw_wbc(
    canvas: np.ndarray,
    rng: np.random.Generator,
    label: str,
    cy: float,
    cx: float,
    radius: float,
    tint: np.ndarray,
) -> None:
    """The white cell of interest: cytoplasm over the red cells, then the nucleus."""
    style = _STYLES[label]
    h, w, _ = canvas.shape
    got = _patch(h, w, cy, cx, radius * 1.1)
    if got is None:
        return
    sl, ys, xs = got
    v, u = _rotate(ys, xs, rng.uniform(0, 2 * math.pi))
    ecc = rng.uniform(0.9, 1.0)
    cell_sdf = _ellipse_sdf(v, u, radius, radius * ecc)
    cell = _coverage(cell_sdf)[..., None]
    ph, pw = cell.shape[:2]

    cyto = np.array(style.cytoplasm) * tint * (1.0 + rng.normal(0, 0.025, 3))
    cyto_px = np.broadcast_to(cyto, (ph, pw, 3)).copy()
    cyto_px *= (0.94 + 0.1 * _smooth_noise(rng, (ph, pw), 6))[..., None]
    nucleus_sdf = _nucleus_sdf(label, v, u, radius, rng)
    if label == "EOSINOPHIL":
        # dense orange-red granules: speckle at about 2-pixel grain over the cytoplasm
        grain = max(1, round(radius / 22))
        coarse = rng.random((ph // grain + 1, pw // grain + 1))
        speck = np.kron(coarse, np.ones((grain, grain)))[:ph, :pw]
        granules = (speck > 0.45).astype(np.float32)[..., None] * 0.6
        granule_colour = np.array([224.0, 96.0, 78.0]) * tint
        cyto_px = cyto_px * (1 - granules) + granule_colour * granules
    canvas[sl] = canvas[sl] * (1.0 - cell) + cyto_px * cell

    nucleus = _coverage(nucleus_sdf)[..., None] * rng.uniform(0.9, 0.97)
    nuc = np.array(style.nucleus) * tint * (1.0 + rng.normal(0, 0.03, 3))
    texture = 1.0 + style.chromatin * (_smooth_noise(rng, (ph, pw), 3) - 0.5) * 2.0
    nuc_px = nuc * texture[..., None]
    canvas[sl] = canvas[sl] * (1.0 - nucleus) + nuc_px * nucleus


@dataclass(frozen=True)
class Cell:
    """A white cell drawn into a field: its class, centre and radius in pixels."""

    label: str
    cy: float
    cx: float
    radius: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max), as Pascal VOC annotations give boxes."""
        r = self.radius * 1.05
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


def _unit(h: int, w: int) -> float:
    """Pixel scale against the 240x320 images the styles were drawn for."""
    return math.sqrt(h * w / (240.0 * 320.0))


def render_field(size: tuple[int, int], place: Callable[[], list[Cell]],
                 rng: np.random.Generator, unit: float | None = None) -> Image.Image:
    """A smear field of red cells and platelets with white cells drawn where `place`
    (called once the stain and light are drawn) puts them."""
    h, w = size
    # single-cell smears keep their historical (sparser) film; whole fields with a given
    # cell scale get the red-cell density of a 240x320 smear at that scale
    density = 1.0 if unit is None else 1.0 / (unit * unit)
    unit = _unit(h, w) if unit is None else unit
    tint = (1.0 + rng.normal(0, 0.03, 3)).astype(np.float32)  # stain batch: all colours shift
    bright = np.float32(rng.uniform(0.95, 1.03))
    illum = 0.95 + 0.07 * _smooth_noise(rng, (h, w), max(8, min(h, w) // 3))
    canvas = (_BACKGROUND * tint * bright)[None, None, :] * illum[..., None]
    canvas = canvas.astype(np.float32)
    cells = place()
    n_rbc = int(rng.integers(26, 40) * (h * w) / (240 * 320) * density)
    for _ in range(n_rbc):
        r = rng.uniform(18, 25) * unit
        py, px = rng.uniform(-r, h + r), rng.uniform(-r, w + r)
        if any(math.hypot(py - c.cy, px - c.cx) < c.radius * 0.7 for c in cells):
            continue  # a white cell sits in a gap of the film
        _draw_rbc(canvas, rng, py, px, r, tint)
    for _ in range(int(rng.integers(0, 3))):
        pr = rng.uniform(1.5, 3.0) * unit
        got = _patch(h, w, rng.uniform(0, h), rng.uniform(0, w), pr + 1)
        if got is not None:
            sl, ys, xs = got
            a = _coverage(np.sqrt(ys**2 + xs**2) - pr)[..., None] * 0.8
            canvas[sl] = canvas[sl] * (1 - a) + _PLATELET * tint * a
    for cell in cells:
        _draw_wbc(canvas, rng, cell.label, cell.cy, cell.cx, cell.radius, tint)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * 2.5
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    if unit < 1.5:  # a small fixed kernel is several times faster than GaussianBlur
        return img.filter(_SOFTEN)
    return img.filter(ImageFilter.GaussianBlur(0.6 * unit))


def render_smear_cell(label: str, size: tuple[int, int], rng: np.random.Generator
                      ) -> tuple[Image.Image, Cell]:
    """One smear with one white cell of `label` somewhere central, and where it is."""
    if label not in _STYLES:
        raise LeukoError(f"unknown class {label!r}; synthetic classes are {', '.join(CLASSES)}")
    h, w = size
    placed: list[Cell] = []

    def place() -> list[Cell]:
        radius = rng.uniform(*_STYLES[label].radius) * _unit(h, w)
        placed.append(Cell(label, rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, radius))
        return placed

    return render_field(size, place, rng), placed[0]


def render_smear(label: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Render one synthetic smear of `label` at size (height, width)."""
    return render_smear_cell(label, size, rng)[0]


def random_field(size: tuple[int, int], n_cells: int, rng: np.random.Generator,
                 unit: float = 1.0) -> tuple[Image.Image, list[Cell]]:
    """A whole field of view with `n_cells` white cells of random classes, apart from each
    other and from the edges: what a microscope camera sees (leuko count's test data)."""
    h, w = size
    cells: list[Cell] = []

    def place() -> list[Cell]:
        for _ in range(200 * max(1, n_cells)):
            if len(cells) == n_cells:
                break
            label = CLASSES[int(rng.integers(0, len(CLASSES)))]
            r = rng.uniform(*_STYLES[label].radius) * unit
            cy, cx = rng.uniform(r * 1.3, h - r * 1.3), rng.uniform(r * 1.3, w - r * 1.3)
            if all(math.hypot(cy - c.cy, cx - c.cx) > 2.6 * max(r, c.radius) for c in cells):
                cells.append(Cell(label, cy, cx, r))
        return cells

    return render_field(size, place, rng, unit), cells


# --------------------------------------------------------------------------- augmentation
def augment_view(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One augmented sibling, as Keras ImageDataGenerator made the real data.

    Partial contrast stretch, random flips, then rotation up to 20 degrees, shear and a shift up
    to 10% about the centre, with black fill where the view leaves the original.
    """
    sample = np.asarray(img)[::4, ::4]
    lo, hi = np.percentile(sample, [rng.uniform(0, 4), rng.uniform(96, 100)])
    strength = rng.uniform(0.0, 0.5)  # partial: the real data's contrast varies, mildly
    view = img
    if hi - lo > 8:
        levels = np.arange(256, dtype=np.float32)
        lut = levels + strength * ((levels - lo) * (255.0 / (hi - lo)) - levels)
        view = img.point(np.clip(np.rint(lut), 0, 255).astype(np.uint8).tolist() * 3)
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    if rng.random() < 0.5:
        view = ImageOps.flip(view)
    w, h = view.size
    angle = math.radians(rng.uniform(-20, 20))
    shear = math.radians(rng.uniform(-10, 10))
    tx, ty = rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h
    c, s = math.cos(angle), math.sin(angle)
    forward = np.array([[c, -s], [s, c]]) @ np.array(
        [[1.0, -math.sin(shear)], [0.0, math.cos(shear)]]
    )
    inv = np.linalg.inv(forward)
    centre = np.array([w / 2.0, h / 2.0])
    offset = centre - inv @ (centre + np.array([tx, ty]))
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    return view.transform(
        (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )


def jpeg_bytes(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def near_copy(data: bytes, transform: str, rng: np.random.Generator) -> bytes:
    """A visually identical copy that differs in bytes (what near-duplicate search must find)."""
    with Image.open(io.BytesIO(data)) as src:
        img = src.convert("RGB")
    if transform == "jpeg_quality":
        return jpeg_bytes(img, 70)
    if transform == "resize":
        w, h = img.size
        return jpeg_bytes(img.resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.LANCZOS))
    if transform == "colour_shift":
        hsv = np.asarray(img.convert("HSV"), dtype=np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(3, 7))) % 256
        hsv[..., 2] = np.clip(hsv[..., 2] * 1.05 + 3, 0, 255)
        shifted = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
        return jpeg_bytes(shifted)
    if transform == "hflip":
        return jpeg_bytes(ImageOps.mirror(img))
    if transform == "rot90":
        return jpeg_bytes(img.transpose(Image.Transpose.ROTATE_90))
    raise ValueError(f"unknown near-copy transform {transform!r}")
