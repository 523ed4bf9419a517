"""Layers leuko puts inside its models, so saved models take whole raw images.

Being layers, they are saved with the model: evaluate, predict and every exported
format (SavedModel, ONNX, LiteRT) feed whole images and need no flags. They use only
ops every format has (pooling, argmax, elementwise maths, matrix products): cropping
is a pair of interpolation matrices, not crop_and_resize, which LiteRT lacks.
"""

from __future__ import annotations

import math
from typing import Any

from .._tf import keras

STAIN_OFFSET = 15.0  # "blue minus red" above this counts towards the stained cell ...
STAIN_RAMP = 20.0  # ... fully once it is this much higher


def _tent(coords: Any, n: Any, step: Any) -> Any:
    """(b, S, n) triangle-filter weights sampling a grid of n pixels at `coords` (b, S).

    The filter widens with the step between samples (antialiasing when shrinking), and
    each row is divided by the filter's sum over the unbounded grid: no ripple inside the
    image, and samples beyond its edge fade to black, as the data's own borders do.
    """
    from .._tf import tf

    width = tf.maximum(step, 1.0)[:, None, None]
    grid = tf.cast(tf.range(n), tf.float32)[None, None, :]
    weights = tf.nn.relu(1.0 - tf.abs(grid - coords[..., None]) / width)
    frac = coords - tf.floor(coords)
    offsets = tf.cast(tf.range(-64, 66), tf.float32)[None, None, :]
    full = tf.reduce_sum(tf.nn.relu(1.0 - tf.abs(offsets - frac[..., None]) / width), axis=2,
                         keepdims=True)
    return weights / tf.maximum(full, 1e-6)


def block_mean(x: Any, k: int) -> Any:
    """(b, h//k, w//k, c) means of k x k blocks: avg_pool2d(x, k, k, "VALID") exactly.

    TensorFlow's CPU pooling kernel is slow for this (52 ms against 9 ms for a batch of
    20 at 240x320, benchmarks/locate_speed.py), and reshapes of at most four dimensions
    keep every export format able to run it.
    """
    from .._tf import tf

    shape = tf.shape(x)
    b, hk, wk, c = shape[0], shape[1] // k, shape[2] // k, shape[3]
    x = x[:, : hk * k, : wk * k, :]
    rows = tf.reduce_mean(tf.reshape(x, [b, hk, k, wk * k * c]), axis=2)  # (b, hk, wk*k*c)
    cells = tf.reshape(rows, [b * hk, wk, k, c])
    return tf.reshape(tf.reduce_mean(cells, axis=2), [b, hk, wk, c])


def box_mean(x: Any, radius: int) -> Any:
    """(b, h, w) means over (2r+1)-square windows, counting only pixels inside the map:
    avg_pool2d(x[..., None], 2r+1, 1, "SAME") exactly, as two small matrix products
    (the pooling kernel took 113 ms for a batch of 20 coarse maps, this 2 ms)."""
    from .._tf import tf

    def band(n: Any) -> Any:
        i = tf.range(n)
        return tf.cast(tf.abs(i[:, None] - i[None, :]) <= radius, tf.float32)

    shape = tf.shape(x)
    rows, cols = band(shape[1]), band(shape[2])
    total = tf.matmul(tf.matmul(rows[None], x), cols[None], transpose_b=True)
    count = tf.reduce_sum(rows, axis=1)[:, None] * tf.reduce_sum(cols, axis=1)[None, :]
    return total / count


def crop_square(images: Any, cy: Any, cx: Any, side: Any, size: int) -> Any:
    """(b, size, size, c) crops of side `side` centred at (cy, cx), in input pixels."""
    from .._tf import tf

    step = side / float(size)
    i = tf.cast(tf.range(size), tf.float32)[None, :]
    ys = cy[:, None] - side[:, None] / 2.0 + (i + 0.5) * step[:, None] - 0.5
    xs = cx[:, None] - side[:, None] / 2.0 + (i + 0.5) * step[:, None] - 0.5
    shape = tf.shape(images)
    rows = _tent(ys, shape[1], step)  # (b, S, H)
    cols = _tent(xs, shape[2], step)  # (b, S, W)
    planes = tf.transpose(images, [0, 3, 1, 2])  # (b, c, H, W)
    planes = tf.matmul(rows[:, None], planes)  # (b, c, S, W)
    planes = tf.matmul(planes, cols[:, None], transpose_b=True)  # (b, c, S, S)
    return tf.transpose(planes, [0, 2, 3, 1])


def top_share_level(values: Any, share: float) -> Any:
    """(b,): per image, the value its highest `share` of (b, h, w) `values` reach down to
    (the k-th largest, k = share of the pixels, at least 1)."""
    from .._tf import tf

    shape = tf.shape(values)
    n = shape[1] * shape[2]
    k = tf.maximum(1, tf.cast(tf.round(share * tf.cast(n, tf.float32)), tf.int32))
    return tf.math.top_k(tf.reshape(values, [shape[0], n]), k).values[:, -1]


BALANCE_TARGET = 235.0  # the level a photo's background is brought to, in each channel


@keras.saving.register_keras_serializable(package="leuko")
class ColorBalance(keras.layers.Layer):
    """Bring each photo's background to one neutral grey, channel by channel.

    Labs differ first in the colour of the light between the cells: white, pink, yellow
    or blue-green, from the lamp, the camera's white balance and the stain batch. The
    brightest `share` of a photo is that background (plasma, the glass), so dividing each
    channel by its mean there (a von Kries white balance) makes the photos of every lab
    look alike before anything else sees them, and the stain measure of the cell crop
    stays calibrated. Pure maths on each image: it is saved and exported with the model.
    """

    def __init__(self, share: float = 0.1, target: float = BALANCE_TARGET,
                 **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.share = float(share)
        self.target = float(target)

    def background(self, images: Any) -> Any:
        """(b, 1, 1, 3): the mean colour of each image's brightest `share` (4x4 blocks)."""
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        blocks = block_mean(x, 4)
        lum = tf.reduce_mean(blocks, axis=3)  # (b, h/4, w/4)
        level = top_share_level(lum, self.share)  # the k-th brightest block
        mask = tf.cast(lum >= level[:, None, None], tf.float32)[..., None]
        total = tf.reduce_sum(blocks * mask, axis=[1, 2], keepdims=True)
        return total / tf.maximum(tf.reduce_sum(mask, axis=[1, 2], keepdims=True), 1.0)

    def call(self, images: Any) -> Any:
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        gain = self.target / tf.maximum(self.background(x), 8.0)
        return tf.clip_by_value(x * tf.clip_by_value(gain, 0.25, 8.0), 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "share": self.share, "target": self.target}


BLACK = 30.0  # a pixel no channel of which reaches this is padding, not slide
STAIN_TARGET = 1.5  # optical density the darkest tenth of a cell crop is brought to


@keras.saving.register_keras_serializable(package="leuko")
class StainNorm(keras.layers.Layer):
    """Bring each crop's stain to one strength: scale its optical density so that its
    darkest `share` (the nucleus) reaches `target`.

    Labs stain for different times with different batches: measured on the data here,
    the nuclei of the blood-cells photos hold 0.98 of optical density (median of the
    darkest tenth of a cell crop) and PBC's CellaVision cells 2.19, so a model trained on
    one reads the other's nuclei as paler (or darker) than any of its classes. Scaling
    the density keeps its colour (the ratio between channels: red eosinophil granules
    stay red) and the shape of the chromatin, and removes the batch's strength. The
    background (balanced grey, no stain) stays where it is.
    """

    def __init__(self, share: float = 0.1, target: float = STAIN_TARGET,
                 **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.share = float(share)
        self.target = float(target)

    def call(self, images: Any) -> Any:
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        base = -math.log((BALANCE_TARGET + 1.0) / 256.0)  # the balanced background's density
        od = tf.maximum(-tf.math.log((x + 1.0) / 256.0) - base, 0.0)
        # black is no stain: the letterbox bars and the corners a turned photo leaves
        slide = tf.reduce_max(x, axis=3, keepdims=True) >= BLACK
        total = tf.reduce_sum(od, axis=3) * tf.cast(slide[..., 0], tf.float32)
        level = top_share_level(total, self.share)
        gain = tf.clip_by_value(self.target / tf.maximum(level, 0.05), 0.2, 5.0)
        od = od * gain[:, None, None, None]
        out = tf.clip_by_value(256.0 * tf.exp(-(od + base)) - 1.0, 0.0, 255.0)
        return tf.where(slide, out, x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "share": self.share, "target": self.target}


@keras.saving.register_keras_serializable(package="leuko")
class CellCrop(keras.layers.Layer):
    """Find the stained white cell and crop a square around it, inside the model.

    A smear is a pale field of red cells with one purple leukocyte; the cell is what
    tells the classes apart, so a network that sees it centred and large spends its
    capacity on it instead of on the background. The cell is located as the densest
    spot of a "blue minus red" map (purple is bluer than red cells), refined to the
    centre and spread of the stained mass around it.

    With `fill` the crop shows that grey beyond the photo's edge instead of black.
    With `scale` (the default for new models) the crop's side is `scale` times the
    stained cell's measured diameter, so a cell comes out the same size however tightly
    the photo was framed and whatever the magnification; `jitter` varies that size and
    centre a little while training. Without `scale` (models saved before it existed) the
    side is `window` times the image's shorter side. With no purple at all, the crop is
    the central `window` of the image.
    """

    def __init__(self, size: int = 128, window: float = 0.6, scale: float | None = None,
                 jitter: float = 0.0, fill: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # locating needs 0-255 precision
        super().__init__(**kwargs)
        self.size = int(size)
        self.window = float(window)
        self.scale = None if scale is None else float(scale)
        self.jitter = float(jitter)
        self.fill = float(fill)

    def locate(self, images: Any) -> tuple[Any, Any, Any]:
        """(cy, cx, side) of each image's crop, in input pixels."""
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        hf, wf = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        short = tf.minimum(hf, wf)
        stain = tf.clip_by_value((x[..., 2:3] - x[..., 0:1] - STAIN_OFFSET) / STAIN_RAMP,
                                 0.0, 1.0)
        coarse = block_mean(stain, 4)[..., 0]  # (b, h/4, w/4)
        py, px, radius, found = _stained_mass(coarse, 0.3 * short / 4.0)
        cy = tf.where(found, py * 4.0 + 1.5, (hf - 1.0) / 2.0)
        cx = tf.where(found, px * 4.0 + 1.5, (wf - 1.0) / 2.0)
        fixed = tf.fill(tf.shape(cy), self.window) * short
        if self.scale is None:
            return cy, cx, fixed
        side = tf.where(found, self.scale * 2.0 * radius * 4.0, fixed)
        return cy, cx, tf.clip_by_value(side, 0.25 * short, 1.5 * short)

    def call(self, images: Any, training: Any = None) -> Any:
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        cy, cx, side = self.locate(x)
        if training and self.jitter > 0:
            b = tf.shape(x)[0]
            side = side * tf.exp(tf.random.uniform([b], -self.jitter, self.jitter))
            cy = cy + side * self.jitter * tf.random.uniform([b], -0.3, 0.3)
            cx = cx + side * self.jitter * tf.random.uniform([b], -0.3, 0.3)
        if not self.fill:
            return crop_square(x, cy, cx, side, self.size)
        # beyond the photo's edge the crop shows `fill` (a balanced background) rather than
        # black, so a cell framed tightly looks as it would with more of the slide around
        return crop_square(x - self.fill, cy, cx, side, self.size) + self.fill

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "window": self.window,
                "scale": self.scale, "jitter": self.jitter, "fill": self.fill}


def _stained_mass(stain: Any, reach0: Any) -> tuple[Any, Any, Any, Any]:
    """Centre (py, px), radius and presence of the stained blob in a coarse stain map.

    Start at the densest spot of a 9x9 box blur; then, three times, take the centre of
    mass and the spread of the stain within a window around the current centre, the
    window shrinking to fit the blob (so a neighbouring cell does not pull it away).
    The radius is that of a disc with the same spread: sqrt(2 * variance).
    """
    from .._tf import tf

    b, hp, wp = tf.shape(stain)[0], tf.shape(stain)[1], tf.shape(stain)[2]
    blurred = box_mean(stain, 4)
    idx = tf.argmax(tf.reshape(blurred, [b, -1]), axis=1, output_type=tf.int32)
    py = tf.cast(idx // wp, tf.float32)
    px = tf.cast(idx % wp, tf.float32)
    gy = tf.cast(tf.range(hp), tf.float32)[None, :, None]
    gx = tf.cast(tf.range(wp), tf.float32)[None, None, :]
    reach = tf.fill([b], 1.0) * reach0
    radius = reach
    total = tf.zeros([b])
    for _ in range(3):
        near = tf.cast((tf.abs(gy - py[:, None, None]) <= reach[:, None, None])
                       & (tf.abs(gx - px[:, None, None]) <= reach[:, None, None]), tf.float32)
        w = stain * near
        total = tf.reduce_sum(w, axis=[1, 2])
        safe = tf.maximum(total, 1e-6)
        my = tf.reduce_sum(w * gy, axis=[1, 2]) / safe
        mx = tf.reduce_sum(w * gx, axis=[1, 2]) / safe
        spread = tf.reduce_sum(w * ((gy - my[:, None, None]) ** 2
                                    + (gx - mx[:, None, None]) ** 2), axis=[1, 2]) / safe
        radius = tf.sqrt(2.0 * spread)
        py = tf.where(total > 0, my, py)
        px = tf.where(total > 0, mx, px)
        reach = tf.clip_by_value(1.8 * radius + 2.0, 3.0, reach0 * 5.0 / 3.0)
    return py, px, radius, total > 0.5
