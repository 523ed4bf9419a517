"""Finding white cells in a whole smear photo, from the stain, without a GPU or weights.

The purple nucleus is what sets a white cell apart from red cells and background: the
stain map ("blue minus red", as the cell crop uses) is thresholded at a working scale,
closed so the lobes of one nucleus join, and cut into connected components. Pieces
close together, or that together are no wider than one nucleus can be, are one nucleus
(the separate lobes of an eosinophil); a component far larger than one cell is two
touching cells and is split in two, unless it is round (a large monocyte). The stain
level is relative to each photo's background colour, so a field tinted red or blue by
its stain batch keeps its pale nuclei. A cell's box is its nucleus's extent grown to the cell.
Every size is a fraction of the photo's shorter side (`cell`: the expected white-cell
diameter), so the same rules hold at any resolution; other magnifications change
`cell`, not the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

WORK_SIDE = 240  # the shorter side the stain map is analysed at
# "purple" starts this far above the background's blue-minus-red: on BCCD's median photo
# the fixed level the cell crop uses (15); the same result from 17 to 31 (README, Counting)
PURPLE_ABOVE_BACKGROUND = 19.0
LEVEL_RANGE = (-25.0, 40.0)  # a photo with no background left (all cell) keeps a sane level
# the cell crop's modeling.layers.STAIN_RAMP (a test keeps them equal): named, not imported,
# because modeling.layers loads TensorFlow and the locator needs none
STAIN_RAMP = 20.0  # "blue minus red" this far above the level counts fully as stain


@dataclass(frozen=True)
class LocatorParams:
    """Sizes as fractions of the expected cell diameter `cell` (itself a fraction of the
    photo's shorter side: about 0.4 for a 100x objective at BCCD's 640x480)."""

    cell: float = 0.4
    stain: float = 0.65  # stain-map level counted as nucleus (0-1)
    close: float = 0.08  # closing radius, joins a nucleus's lobes
    merge: float = 0.3  # pieces whose centres are this close are one nucleus
    min_area: float = 0.3  # smallest nucleus, as a share of a typical one's area
    split: float = 1.25  # a nucleus wider than this (x cell) is two touching cells ...
    elongated: float = 0.65  # ... if elongated: minor/major axis below this (two discs 0.45)
    lobes: float = 2.0  # separate pieces with at most this much stain (x typical) may be lobes
    grow: float = 1.35  # cell box / nucleus extent
    min_box: float = 0.55  # smallest cell box side (x cell)
    round: float = 0.85  # each box side is at least this share of the longest (cells are round)
    # chosen on BCCD's even-numbered photos; measured on the odd ones (README, Counting)


@dataclass
class Located:
    """One white cell: its box in photo pixels (x0, y0, x1, y1) and a confidence 0-1."""

    box: tuple[float, float, float, float]
    confidence: float
    centre: tuple[float, float] = field(default=(0.0, 0.0))  # (y, x)


def stain_map(rgb: np.ndarray, level: float | None = None) -> np.ndarray:
    """0-1 "purple" per pixel, smoothed a little: blue minus red, counted from the photo's
    background (the colour of its brightest fifth: plasma between the cells), so a redder
    or bluer stain shifts the level with it, while a field crowded with red cells or
    filled by one large cell does not. A fixed `level` gives the cell crop's own map
    (`layers.STAIN_OFFSET`)."""
    from scipy import ndimage

    purple = rgb[..., 2] - rgb[..., 0]
    if level is None:
        bright = rgb.mean(axis=-1)
        background = float(np.median(purple[bright >= np.percentile(bright, 80)]))
        level = float(np.clip(background + PURPLE_ABOVE_BACKGROUND, *LEVEL_RANGE))
    raw = np.clip((purple - level) / STAIN_RAMP, 0.0, 1.0)
    return ndimage.gaussian_filter(raw, 1.0)


def _components(stain: np.ndarray, p: LocatorParams, diameter: float) -> list[np.ndarray]:
    """Pixel coordinates (n, 2) of each closed, filled nucleus component."""
    from scipy import ndimage

    r = max(1, round(p.close * diameter))
    disc = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(stain > p.stain, structure=disc))
    labels, _ = ndimage.label(mask)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        ys, xs = np.nonzero(labels[sl] == i)
        out.append(np.stack([ys + sl[0].start, xs + sl[1].start], axis=1))
    return out


def _merge_pieces(parts: list[np.ndarray], p: LocatorParams, diameter: float
                  ) -> list[np.ndarray]:
    """Join pieces whose centres are close, unless together they are wider than a cell."""
    parts = list(parts)
    joined = True
    while joined and len(parts) > 1:
        joined = False
        centres = [q.mean(axis=0) for q in parts]
        for a in range(len(parts)):
            for b in range(a + 1, len(parts)):
                if np.hypot(*(centres[a] - centres[b])) >= p.merge * diameter:
                    continue
                both = np.concatenate([parts[a], parts[b]])
                if np.ptp(both, axis=0).max() <= p.split * diameter:
                    parts[a] = both
                    parts.pop(b)
                    joined = True
                    break
            if joined:
                break
    return parts


def _join_lobes(parts: list[np.ndarray], p: LocatorParams, diameter: float, typical: float
                ) -> list[np.ndarray]:
    """Join pieces that together are no wider than one nucleus can be and hold no more
    stain than `lobes` typical nuclei (two large nuclei side by side stay two cells)."""
    parts = list(parts)
    a = 0
    while a < len(parts):
        for b in range(len(parts) - 1, a, -1):  # from the end: popping b keeps a..b-1
            both = np.concatenate([parts[a], parts[b]])
            if (len(both) <= p.lobes * typical
                    and np.ptp(both, axis=0).max() <= p.split * diameter):
                parts[a] = both
                parts.pop(b)
        a += 1
    return parts


def _two_cells(pts: np.ndarray, p: LocatorParams, diameter: float) -> bool:
    """Wider than a nucleus and elongated: two touching discs have an axis ratio of 0.45,
    one large round cell near 1."""
    if np.ptp(pts, axis=0).max() <= p.split * diameter:
        return False
    minor, major = np.linalg.eigvalsh(np.cov(pts.T.astype(np.float64)))
    return bool(np.sqrt(max(minor, 0.0) / max(major, 1e-9)) < p.elongated)


def _split_two(pts: np.ndarray) -> list[np.ndarray]:
    """Two touching nuclei: 2-means on the pixel coordinates, seeded at the extremes."""
    axis = int(np.argmax(np.ptp(pts, axis=0)))
    centres = pts[[int(pts[:, axis].argmin()), int(pts[:, axis].argmax())]].astype(float)
    for _ in range(10):
        which = ((pts[:, None, :] - centres[None]) ** 2).sum(-1).argmin(axis=1)
        centres = np.stack([pts[which == k].mean(axis=0) for k in (0, 1)])
    return [pts[which == k] for k in (0, 1)]


def locate_cells(image: Image.Image | np.ndarray, params: LocatorParams | None = None
                 ) -> list[Located]:
    """The white cells of one photo, largest confidence first."""
    p = params or LocatorParams()
    img = image if isinstance(image, Image.Image) else Image.fromarray(
        np.clip(image, 0, 255).astype(np.uint8))
    img = img.convert("RGB")
    f = WORK_SIDE / min(img.size)
    small = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))),
                       Image.Resampling.BILINEAR)
    diameter = p.cell * WORK_SIDE
    typical = np.pi / 4 * (0.6 * diameter) ** 2  # a nucleus about 0.6 of the cell across
    pieces = _merge_pieces(_components(stain_map(np.asarray(small, np.float32)), p, diameter),
                           p, diameter)
    pieces = _join_lobes([q for q in pieces if len(q) >= p.min_area * typical], p, diameter,
                         typical)
    found: list[Located] = []
    limit = (img.width, img.height)
    for pts in pieces:
        halves = _split_two(pts) if _two_cells(pts, p, diameter) else [pts]
        for part in halves:
            if len(part) >= p.min_area * typical:
                found.append(_box(part, p, diameter, typical, f, limit))
    return sorted(found, key=lambda c: -c.confidence)


def _box(pts: np.ndarray, p: LocatorParams, diameter: float, typical: float, f: float,
         limit: tuple[int, int]) -> Located:
    cy, cx = pts.mean(axis=0)
    # cells are round: the nucleus's extent made nearly square and grown to the cell,
    # then cut at the photo's edge, as annotators draw a cell the frame cuts
    ext = np.ptp(pts, axis=0) + 1.0
    ext = np.maximum(ext, p.round * ext.max())
    h, w = (max(float(e) * p.grow, p.min_box * diameter) for e in ext)
    box = (max(0.0, (cx - w / 2) / f), max(0.0, (cy - h / 2) / f),
           min(float(limit[0]), (cx + w / 2) / f), min(float(limit[1]), (cy + h / 2) / f))
    confidence = float(min(1.0, len(pts) / typical))
    return Located(box, round(confidence, 4), (float(cy / f), float(cx / f)))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truth: list[tuple[float, ...]], found: list[tuple[float, ...]], at: float = 0.5
          ) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of boxes at IoU >= `at`, best pairs first."""
    pairs = sorted(((iou(t, d), i, j) for i, t in enumerate(truth) for j, d in enumerate(found)),
                   reverse=True)
    used_t: set[int] = set()
    used_d: set[int] = set()
    out = []
    for score, i, j in pairs:
        if score < at:
            break
        if i not in used_t and j not in used_d:
            used_t.add(i)
            used_d.add(j)
            out.append((i, j))
    return out
