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

from ..errors import LeukoError

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


AUGMENT_POLICIES: dict[str, AugmentPolicy] = {
    # The paper's: random flips and rotations, mild shift and zoom.
    "paper": AugmentPolicy("paper", rotation=math.pi, shift=0.05, zoom=0.05, shear=0.0),
    # What the real data does between siblings, and stain variation between labs:
    # rotation, 10% shifts, shear, flips, contrast stretch, colour jitter.
    "strong": AugmentPolicy(
        "strong", rotation=math.pi, shift=0.10, zoom=0.10, shear=0.2,
        contrast_stretch=0.5, color=0.08,
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
        zoom=1.0 + draw.uniform([b], -policy.zoom, policy.zoom),
        shift_y=draw.uniform([b], -policy.shift, policy.shift) * hf,
        shift_x=draw.uniform([b], -policy.shift, policy.shift) * wf,
        flip_h=draw.uniform([b], 0.0, 1.0) < 0.5,
        flip_v=draw.uniform([b], 0.0, 1.0) < 0.5,
    )
    x = apply_transforms(images, transforms)
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
    return tf.clip_by_value(x, 0.0, 255.0)


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
    """The one check of --tta (no TensorFlow needed: MAX_TTA is a constant here)."""
    if not 1 <= tta <= MAX_TTA:
        raise LeukoError(f"--tta must be between 1 (off) and {MAX_TTA} views (got {tta})")


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


