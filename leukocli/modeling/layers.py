"""Layers leuko puts inside its models, so saved models take whole raw images.

Being layers, they are saved with the model: evaluate, predict and every exported
format feed whole images and need no flags.
"""

from __future__ import annotations

from typing import Any

from .._tf import keras


@keras.saving.register_keras_serializable(package="leuko")
class CellCrop(keras.layers.Layer):
    """Find the stained white cell and crop a square around it, inside the model.

    Every smear is a pink field of red cells with one purple leukocyte; the nucleus is
    what tells the classes apart, so a network that sees a centred crop at higher
    resolution spends its capacity on it instead of on the background, and it no longer
    has to learn invariance to where the cell sits. Being a layer, the crop is saved
    with the model: evaluate and predict feed whole images and need no flags.

    The cell is the peak of a blurred "blue minus red" map (purple is bluer than red
    cells and background); with no purple at all, the crop falls back to the centre.
    `window` is the crop's side as a fraction of the image's shorter side.
    """

    def __init__(self, size: int = 96, window: float = 0.6, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # locating needs 0-255 precision
        super().__init__(**kwargs)
        self.size = int(size)
        self.window = float(window)

    def call(self, images: Any) -> Any:
        from .._tf import tf

        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        b = shape[0]
        hf, wf = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        half = self.window * tf.minimum(hf, wf) / 2.0
        purple = tf.nn.relu(x[..., 2:3] - x[..., 0:1] - 20.0)
        purple = tf.nn.avg_pool2d(purple, 4, 4, "VALID")[..., 0]  # (b, h/4, w/4)
        # 1) the densest purple spot: a box blur's peak (zero-padded so edges are not favoured)
        blurred = tf.nn.avg_pool2d(
            tf.pad(purple[..., None], [[0, 0], [4, 4], [4, 4], [0, 0]]), 9, 1, "VALID"
        )
        flat = tf.reshape(blurred, [b, -1])
        width = tf.shape(purple)[2]
        idx = tf.argmax(flat, axis=1, output_type=tf.int32)
        py = tf.cast(idx // width, tf.float32)[:, None, None]
        px = tf.cast(idx % width, tf.float32)[:, None, None]
        # 2) the centre of purple mass within a crop's reach of it: a flat-topped peak
        #    has many argmaxes, and taking the first would shift every crop up and left
        grid_y = tf.cast(tf.range(tf.shape(purple)[1]), tf.float32)[None, :, None]
        grid_x = tf.cast(tf.range(width), tf.float32)[None, None, :]
        reach = half / 4.0
        near = tf.logical_and(tf.abs(grid_y - py) <= reach, tf.abs(grid_x - px) <= reach)
        mass = purple * tf.cast(near, tf.float32)
        total = tf.reduce_sum(mass, axis=[1, 2])
        found = total > 0.0
        safe = tf.maximum(total, 1e-6)
        my = tf.reduce_sum(mass * grid_y, axis=[1, 2]) / safe
        mx = tf.reduce_sum(mass * grid_x, axis=[1, 2]) / safe
        cy = tf.where(found, my * 4.0 + 1.5, (hf - 1.0) / 2.0)
        cx = tf.where(found, mx * 4.0 + 1.5, (wf - 1.0) / 2.0)
        boxes = tf.stack(
            [(cy - half) / (hf - 1.0), (cx - half) / (wf - 1.0),
             (cy + half) / (hf - 1.0), (cx + half) / (wf - 1.0)],
            axis=1,
        )
        return tf.image.crop_and_resize(
            x, boxes, tf.range(b), (self.size, self.size), extrapolation_value=0.0
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "window": self.window}
