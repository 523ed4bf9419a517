"""tf.data pipelines: read from disk, decode, resize, (augment), batch, prefetch.

One function serves training, evaluation and prediction, so every command feeds the
model exactly the same pixels: float32 RGB in 0..255, resized to the run's image size.
Images stream from disk (never the whole dataset in memory); decoding runs in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._tf import tf
from ..data.images import needs_pillow
from .augment import augment_batch, get_augment_policy


def _decode_pillow(data: bytes) -> np.ndarray:
    """Pillow for what TensorFlow reads differently (TIFF, deep samples, EXIF turns)."""
    import io

    from PIL import Image

    from ..data.images import to_rgb

    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(to_rgb(im), dtype=np.uint8)


def _needs_pillow_np(path: np.ndarray) -> np.bool_:
    value = np.asarray(path).item()
    return np.bool_(needs_pillow(value.decode() if isinstance(value, bytes) else str(value)))


def decode_image(path: tf.Tensor, pillow: tf.Tensor | bool = False) -> tf.Tensor:
    """Read and decode one image file to a uint8 (h, w, 3) tensor (JPEG/PNG/BMP/GIF/TIFF),
    the same pixels Pillow gives; `pillow` (data.images.needs_pillow) routes it through
    the same reading as the rest of leuko."""
    data = tf.io.read_file(path)

    def _tf_decode() -> tf.Tensor:
        # JPEG with the accurate integer DCT, as Pillow (and so the TensorFlow-free
        # runtimes) decodes it; TensorFlow's default fast DCT differs by up to 5 levels
        img = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False,
                                       dtype=tf.uint8),
        )
        return tf.ensure_shape(img, [None, None, 3])

    def _pil_decode() -> tf.Tensor:
        img = tf.numpy_function(_decode_pillow, [data], tf.uint8, stateful=False)
        return tf.ensure_shape(img, [None, None, 3])

    return tf.cond(tf.convert_to_tensor(pillow, tf.bool), _pil_decode, _tf_decode)


def load_image(path: tf.Tensor, img_size: tuple[int, int],
               pillow: tf.Tensor | bool | None = None) -> tf.Tensor:
    """Decode and fit into img_size: float32 RGB in 0..255.

    The aspect ratio is kept (antialiased bilinear resize, then black bars, as
    tf.image.resize_with_pad does): stretching a square cell photo into a 3:4 frame
    would turn round cells into ellipses and change the answer.
    """
    if pillow is None:  # a lone path (tests, benchmarks): look at its header here
        pillow = tf.numpy_function(_needs_pillow_np, [path], tf.bool, stateful=False)
        pillow = tf.ensure_shape(pillow, [])
    img = decode_image(path, pillow)
    h, w = int(img_size[0]), int(img_size[1])
    shape = tf.shape(img)
    same = tf.logical_and(tf.equal(shape[0], h), tf.equal(shape[1], w))
    out = tf.cond(
        same,
        lambda: tf.cast(img, tf.float32),
        lambda: tf.image.resize_with_pad(tf.cast(img, tf.float32), h, w, antialias=True),
    )
    return tf.ensure_shape(out, [h, w, 3])


def build_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | None,
    img_size: tuple[int, int],
    batch_size: int,
    training: bool = False,
    augment: bool | str = False,
    seed: int = 0,
    n_classes: int | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of images read from `paths`.

    Yields `images` (float32, shape (b, h, w, 3), RGB 0..255) when `labels` is None,
    else `(images, labels)` with integer class ids (int32, shape (b,)) — or one-hot
    float32 (b, n_classes) when `n_classes` is given. With `training=True` the file order
    is reshuffled every epoch (seeded) and `augment` adds random flips/rotations (True or
    'paper'; 'strong' adds shear, contrast stretch and colour jitter, see AUGMENT_POLICIES);
    with `training=False` the order is exactly `paths`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    paths = [str(p) for p in paths]
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    size = (int(img_size[0]), int(img_size[1]))
    ids = [int(x) for x in labels] if labels is not None else [-1] * len(paths)
    pillow = [needs_pillow(p) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(ids, tf.int32), tf.constant(pillow, tf.bool))
    )
    if training and len(paths) > 1:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # deterministic order everywhere: with the seeded shuffle and per-batch augmentation
    # seeds below, a seeded run is repeatable (what cv's --fold/--collect relies on)
    ds = ds.map(lambda p, y, f: (load_image(p, size, f), y), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(batch_size)
    if training and augment:
        policy = get_augment_policy("paper" if augment is True else str(augment))
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda xy, s: (augment_batch(xy[0], policy, s), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
    if labels is None:
        ds = ds.map(lambda x, y: x)
    elif n_classes is not None:
        depth = int(n_classes)
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, depth, dtype=tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)
