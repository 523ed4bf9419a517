"""Random training augmentation and fixed test-time views, as batched TensorFlow ops.

All geometry is composed into one projective transform per image and applied in a
single resampling pass: chaining Keras's RandomRotation, RandomTranslation and
RandomZoom layers resampled every image three times and ran at a third of a plain
Pillow loop's speed (benchmarks/loader_throughput.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LeukoError, ParameterError, opt

if TYPE_CHECKING:  # TensorFlow loads only when a batch is really transformed
    from .._tf import tf


@dataclass(frozen=True)
class AugmentPolicy:
    """Ranges of the random geometry and colour changes applied to training batches.

    All geometry is composed into one projective transform per image and applied in a
    single resampling pass: chaining Keras's RandomRotation, RandomTranslation and
    RandomZoom layers resampled every image three times and ran at a third of a plain
    Pillow loop's speed (benchmarks/loader_throughput.py).
    """

    name: str
    rotation: float  # max |angle|, radians
    shift: float  # max |shift| as a fraction of height/width
    zoom: float  # scale drawn from [1 - zoom, 1 + zoom]
    shear: float  # max |shear angle|, radians
    contrast_stretch: float = 0.0  # probability of a per-image min/max stretch
    color: float = 0.0  # per-channel gain range; offsets and saturation scale with it
    # What differs between microscopes (the "domain" policy): each 0 is off.
    magnify: float = 0.0  # extra scale, log-uniform in [1/(1+m/3), 1+m] (framing)
    resolution: float = 0.0  # share of images seen blurred: at a lower resolution, then up
    lowest: float = 0.3  # ... the smallest linear scale of that resolution (one per batch)
    stain: float = 0.0  # stain amount and hue: optical-density scale and hue turn range
    cast: float = 0.0  # per-channel gain range of the light (white balance, lamp colour)
    gamma: float = 0.0  # exponent range of the camera's tone curve, log-uniform
    noise: float = 0.0  # largest sensor noise sigma, in 0-255 levels
    grey: float = 0.0  # share of images turned grey (a stain seen without its colour)
    tight: float = 0.0  # share of images re-framed as a tight crop around the stained cell


AUGMENT_POLICIES: dict[str, AugmentPolicy] = {
    # The paper's: random flips and rotations, mild shift and zoom.
    "paper": AugmentPolicy("paper", rotation=math.pi, shift=0.05, zoom=0.05, shear=0.0),
    # What the real data does between siblings, and stain variation between labs:
    # rotation, 10% shifts, shear, flips, contrast stretch, colour jitter.
    "strong": AugmentPolicy(
        "strong", rotation=math.pi, shift=0.10, zoom=0.10, shear=0.2,
        contrast_stretch=0.5, color=0.08,
    ),
    # Everything "strong" has, over the whole range seen between labs: magnification and
    # framing from a tight crop to a wide field, resolution and focus, the stain's amount
    # and hue, the light's colour, the camera's tone curve and noise.
    "domain": AugmentPolicy(
        "domain", rotation=math.pi, shift=0.10, zoom=0.10, shear=0.2,
        contrast_stretch=0.3, color=0.0, magnify=0.5, resolution=0.85, lowest=0.2, stain=0.5,
        cast=0.3, gamma=0.35, noise=6.0, grey=0.05, tight=0.25,
    ),
}


def get_augment_policy(name: str) -> AugmentPolicy:
    if name not in AUGMENT_POLICIES:
        choices = ", ".join(AUGMENT_POLICIES)
        raise LeukoError(f"unknown augmentation {name!r}; choose one of {choices}")
    return AUGMENT_POLICIES[name]


def affine_transforms(
    height: tf.Tensor,
    width: tf.Tensor,
    angle: tf.Tensor,
    shear: tf.Tensor,
    zoom: tf.Tensor,
    shift_y: tf.Tensor,
    shift_x: tf.Tensor,
    flip_h: tf.Tensor,
    flip_v: tf.Tensor,
) -> tf.Tensor:
    """Per-image 8-parameter transforms (output pixel -> input pixel) about the centre.

    Every argument but the sizes has shape (b,); shifts are in pixels; zoom > 1 magnifies.
    """
    from .._tf import tf

    f32 = tf.float32
    cy = (tf.cast(height, f32) - 1.0) / 2.0
    cx = (tf.cast(width, f32) - 1.0) / 2.0
    c, s, k = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    fx = tf.where(flip_h, -1.0, 1.0) / zoom
    fy = tf.where(flip_v, -1.0, 1.0) / zoom
    a00, a01 = c * fx, (c * k - s) * fy
    a10, a11 = s * fx, (s * k + c) * fy
    a2 = cx - a00 * cx - a01 * cy + shift_x
    b2 = cy - a10 * cx - a11 * cy + shift_y
    zeros = tf.zeros_like(a00)
    return tf.stack([a00, a01, a2, a10, a11, b2, zeros, zeros], axis=1)


def apply_transforms(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Resample a batch once through its per-image transforms (bilinear, reflected edges)."""
    from .._tf import tf

    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(transforms, tf.float32),
        output_shape=shape[1:3],
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


class _Draws:
    """Random numbers for one batch: stateless from `seed` (repeatable, safe in parallel
    tf.data maps), or from TensorFlow's global generator when there is no seed."""

    def __init__(self, seed: tf.Tensor | None) -> None:
        self.seed = seed
        self.k = 0

    def normal(self, shape: tf.Tensor) -> tf.Tensor:
        from .._tf import tf

        self.k += 1
        if self.seed is None:
            return tf.random.normal(shape)
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.k)
        return tf.random.stateless_normal(shape, seed=seed)

    def uniform(self, shape: list[tf.Tensor | int], lo: float, hi: float) -> tf.Tensor:
        from .._tf import tf

        self.k += 1
        if self.seed is None:
            return tf.random.uniform(shape, lo, hi)
        seed = tf.random.experimental.stateless_fold_in(self.seed, self.k)
        return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def augment_batch(
    images: tf.Tensor, policy: AugmentPolicy, seed: tf.Tensor | None = None
) -> tf.Tensor:
    """Random geometry (one resampling) and, per policy, contrast stretch and colour jitter.

    With `seed` (an int tensor of shape [2]) the batch's draws are a pure function of it,
    so a seeded training run sees the same augmentation every time.
    """
    from .._tf import tf

    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    draw = _Draws(seed)
    transforms = affine_transforms(
        h, w,
        angle=draw.uniform([b], -policy.rotation, policy.rotation),
        shear=draw.uniform([b], -policy.shear, policy.shear),
        zoom=_zoom(b, policy, draw),
        shift_y=draw.uniform([b], -policy.shift, policy.shift) * hf,
        shift_x=draw.uniform([b], -policy.shift, policy.shift) * wf,
        flip_h=draw.uniform([b], 0.0, 1.0) < 0.5,
        flip_v=draw.uniform([b], 0.0, 1.0) < 0.5,
    )
    x = apply_transforms(images, transforms)
    if policy.tight > 0:
        x = _tight_crop(x, policy.tight, draw)
    if policy.resolution > 0:
        x = _lower_resolution(x, policy, draw)
    if policy.stain > 0 or policy.cast > 0 or policy.gamma > 0:
        x = _stain_and_light(x, policy, draw)
    if policy.contrast_stretch > 0:
        lo = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
        hi = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
        stretched = (x - lo) * (255.0 / tf.maximum(hi - lo, 1.0))
        pick = draw.uniform([b, 1, 1, 1], 0.0, 1.0) < policy.contrast_stretch
        x = tf.where(pick, stretched, x)
    if policy.color > 0:
        c = policy.color
        gain = 1.0 + draw.uniform([b, 1, 1, 3], -c, c)
        offset = draw.uniform([b, 1, 1, 3], -150.0 * c, 150.0 * c)
        grey = tf.reduce_mean(x, axis=3, keepdims=True)
        sat = 1.0 + draw.uniform([b, 1, 1, 1], -2.5 * c, 2.5 * c)
        x = grey + (x - grey) * sat
        x = x * gain + offset
    if policy.grey > 0:
        grey = tf.reduce_mean(x, axis=3, keepdims=True)
        x = tf.where(draw.uniform([b, 1, 1, 1], 0.0, 1.0) < policy.grey, grey + 0.0 * x, x)
    if policy.noise > 0:
        sigma = draw.uniform([b, 1, 1, 1], 0.0, policy.noise)
        x = x + sigma * draw.normal(tf.concat([tf.shape(x)[:3], [1]], 0))  # sensor noise
    return tf.clip_by_value(x, 0.0, 255.0)


def _zoom(b: tf.Tensor, policy: AugmentPolicy, draw: _Draws) -> tf.Tensor:
    """Per-image scale: the policy's small zoom, times (with `magnify`) a log-uniform
    magnification from 1/(1 + m/3) (wider framing) up to 1 + m (a cell filling the frame)."""
    from .._tf import tf

    zoom = 1.0 + draw.uniform([b], -policy.zoom, policy.zoom)
    if policy.magnify > 0:
        zoom = zoom * tf.exp(draw.uniform([b], -math.log1p(policy.magnify / 3.0),
                                          math.log1p(policy.magnify)))
    return zoom


def _tight_crop(x: tf.Tensor, share: float, draw: _Draws) -> tf.Tensor:
    """A `share` of the batch re-framed as another lab's tight crop: a square 1 to 1.6
    stained-cell diameters wide around the cell (found as CellCrop finds it), scaled to
    the frame's shorter side and letterboxed, as the loader shows a square photo."""
    from .._tf import tf
    from .layers import CellCrop

    if not x.shape[1] or not x.shape[2]:
        return x  # a frame of unknown size (never in leuko's pipeline): left as it is
    h, w = int(x.shape[1]), int(x.shape[2])
    b = tf.shape(x)[0]
    cy, cx, side = CellCrop(scale=1.0).locate(x)
    half = side * draw.uniform([b], 1.0, 1.6) / 2.0
    boxes = tf.stack([(cy - half) / (h - 1), (cx - half) / (w - 1),
                      (cy + half) / (h - 1), (cx + half) / (w - 1)], axis=1)
    size = min(h, w)
    # training only, so TensorFlow's own crop serves (exported models never hold this)
    crops = tf.image.crop_and_resize(x, boxes, tf.range(b), [size, size],
                                     extrapolation_value=0.0)
    top, left = (h - size) // 2, (w - size) // 2
    framed = tf.pad(crops, [[0, 0], [top, h - size - top], [left, w - size - left], [0, 0]])
    return tf.where(draw.uniform([b, 1, 1, 1], 0.0, 1.0) < share, framed, x)


def _lower_resolution(x: tf.Tensor, policy: AugmentPolicy, draw: _Draws) -> tf.Tensor:
    """A camera of lower resolution, or a photo out of focus: a `resolution` share of the
    batch shrunk to one scale in [lowest, 1] (antialiased) and enlarged back."""
    from .._tf import tf

    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    f = draw.uniform([], policy.lowest, 1.0)
    small = tf.image.resize(x, [tf.maximum(4, tf.cast(tf.cast(h, tf.float32) * f, tf.int32)),
                                tf.maximum(4, tf.cast(tf.cast(w, tf.float32) * f, tf.int32))],
                            antialias=True)
    back = tf.image.resize(small, [h, w])
    return tf.where(draw.uniform([b, 1, 1, 1], 0.0, 1.0) < policy.resolution, back, x)


def _stain_and_light(x: tf.Tensor, policy: AugmentPolicy, draw: _Draws) -> tf.Tensor:
    """Another stain batch, lamp and camera, as one affine map of optical density.

    In optical density (OD = -log of transmitted light, what a stain adds) a stain's
    amount scales each channel, its hue turns the OD vector about the grey axis, the
    camera's tone curve (gamma) scales all of it, and the lamp's colour (a gain per
    channel) shifts it. Nuclei get darker or paler, bluer or redder, while the empty
    background moves only with the lamp. One pass over the pixels does all four.
    """
    from .._tf import tf

    b = tf.shape(x)[0]
    amount = policy.stain
    od = -tf.math.log((x + 1.0) / 256.0)  # 0 for white, more where stain absorbs
    scale = tf.exp(draw.uniform([b, 1, 3], -amount, amount))  # per channel
    level = tf.exp(draw.uniform([b, 1, 1], -policy.gamma, policy.gamma))  # tone curve
    angle = draw.uniform([b], -0.6 * amount, 0.6 * amount)  # radians about (1, 1, 1)
    c, s = tf.cos(angle), tf.sin(angle)
    third, root = 1.0 / 3.0, 1.0 / math.sqrt(3.0)
    # Rodrigues' rotation about the unit grey axis, one 3x3 matrix per image
    turn = tf.stack([
        tf.stack([c + (1 - c) * third, (1 - c) * third - s * root, (1 - c) * third + s * root], 1),
        tf.stack([(1 - c) * third + s * root, c + (1 - c) * third, (1 - c) * third - s * root], 1),
        tf.stack([(1 - c) * third - s * root, (1 - c) * third + s * root, c + (1 - c) * third], 1),
    ], 1)  # (b, 3 out, 3 in)
    matrix = turn * scale * level  # scale the input channels, then turn, then the curve
    shift = draw.uniform([b, 1, 1, 3], -policy.cast, policy.cast)  # -log of the lamp's gain
    od = tf.einsum("bhwc,bdc->bhwd", od, matrix) + shift
    return tf.clip_by_value(256.0 * tf.exp(-od) - 1.0, 0.0, 255.0)


# Test-time views, in order of how safe they are: exact flips first, then small turns,
# quarter turns (the rest of the square's symmetries; on a non-square image the turned
# picture is cut to the same frame, so the corners fill black as the data's own turned
# siblings do), then 5% shifts. Each is (degrees, flip left-right, flip up-down, shift
# down, shift right) with shifts as fractions of the side.
TTA_VIEWS: tuple[tuple[float, bool, bool, float, float], ...] = (
    (0.0, False, False, 0.0, 0.0),
    (0.0, True, False, 0.0, 0.0),
    (0.0, False, True, 0.0, 0.0),
    (0.0, True, True, 0.0, 0.0),
    (12.0, False, False, 0.0, 0.0),
    (-12.0, False, False, 0.0, 0.0),
    (12.0, True, False, 0.0, 0.0),
    (-12.0, False, True, 0.0, 0.0),
    (24.0, False, False, 0.0, 0.0),
    (-24.0, True, True, 0.0, 0.0),
    (24.0, True, False, 0.0, 0.0),
    (-24.0, False, True, 0.0, 0.0),
    (90.0, False, False, 0.0, 0.0),
    (-90.0, False, False, 0.0, 0.0),
    (90.0, True, False, 0.0, 0.0),
    (-90.0, True, False, 0.0, 0.0),
    (0.0, False, False, 0.05, 0.0),
    (0.0, False, False, -0.05, 0.0),
    (0.0, False, False, 0.0, 0.05),
    (0.0, False, False, 0.0, -0.05),
)
MAX_TTA = len(TTA_VIEWS)


def check_tta(tta: int) -> None:
    """The one check of `tta` (no TensorFlow needed: MAX_TTA is a constant here)."""
    if not 1 <= tta <= MAX_TTA:
        raise ParameterError("tta", f"{opt('tta')} must be between 1 (off) and {MAX_TTA} views "
                                    f"(got {tta})")


def tta_views(images: tf.Tensor, n: int) -> list[tf.Tensor]:
    """The first `n` fixed views of a batch (see TTA_VIEWS); view 0 is the image itself."""
    from .._tf import tf

    check_tta(n)
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    views = [images]
    for angle, fh, fv, dy, dx in TTA_VIEWS[1:n]:
        if angle == 0.0 and dy == 0.0 and dx == 0.0:
            v = images
            if fh:
                v = v[:, :, ::-1, :]
            if fv:
                v = v[:, ::-1, :, :]
            views.append(v)
            continue
        ones = tf.ones([b])
        t = affine_transforms(
            h, w, angle=ones * math.radians(angle), shear=ones * 0.0, zoom=ones,
            shift_y=ones * dy * hf, shift_x=ones * dx * wf,
            flip_h=tf.fill([b], fh), flip_v=tf.fill([b], fv),
        )
        views.append(apply_transforms(images, t))
    return views


