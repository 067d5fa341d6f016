"""tf.data input pipelines over stored frames (JPEG files listed in a manifest)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import tensorflow as tf

_CACHE_LIMIT_BYTES = 4 * 1024**3  # decoded frames are cached in memory only below this (held twice: cache + shuffle)


def frame_dataset(
    manifest: pd.DataFrame,
    *,
    batch_size: int,
    training: bool,
    seed: int,
    image_size: int | None = None,
    robust: bool = False,
) -> tf.data.Dataset:
    """Batches of (0-255 float frames, labels[, sample weights]) from manifest rows.

    With ``image_size`` the frames are resized here, as the served model's own resizing
    layer does, so decoded frames can be cached in memory at the backbone's size.
    Training data is shuffled as a whole list (not through a small buffer, which a
    class-sorted list would defeat); ``robust`` adds random JPEG re-compression and blur
    so the model does not key on one encoding.
    """
    paths = manifest["frame_path"].to_numpy(str)
    labels = manifest["label"].to_numpy(np.float32)
    frame_size = int(manifest["frame_size"].iloc[0]) if len(manifest) else 256
    size = image_size or frame_size
    cached = len(paths) * size * size * 3 < _CACHE_LIMIT_BYTES
    columns = (paths, labels, manifest["sample_weight"].to_numpy(np.float32)) if training else (paths, labels)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    shuffle = partial(tf.data.Dataset.shuffle, buffer_size=max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    if training and not cached:
        dataset = shuffle(dataset)  # shuffling paths is cheap; decoded frames would not fit
    dataset = dataset.map(
        lambda path, *rest: (_load(path, frame_size, size), *rest), num_parallel_calls=tf.data.AUTOTUNE
    )
    if cached:
        dataset = dataset.cache()
        if training:
            dataset = shuffle(dataset)
    if training and robust:
        dataset = dataset.map(
            lambda image, *rest: (_robustness_augment(image), *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    return (
        dataset.batch(batch_size)
        .map(lambda image, *rest: (tf.cast(image, tf.float32), *rest))
        .prefetch(tf.data.AUTOTUNE)
    )


def _load(path: tf.Tensor, frame_size: int, size: int) -> tf.Tensor:
    # The accurate integer DCT is libjpeg's default, so training decodes the pixels OpenCV
    # decodes when scoring; TensorFlow's own default (the fast DCT) is off by up to 9 levels.
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
    image = tf.ensure_shape(image, (frame_size, frame_size, 3))
    if size == frame_size:
        return image
    # The same op as keras.layers.Resizing (bilinear, no antialiasing), rounded back to uint8.
    resized = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _robustness_augment(image: tf.Tensor) -> tf.Tensor:
    """Random JPEG re-compression (quality 50-100) and Gaussian blur (sigma up to 1.5)."""
    image = tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.image.random_jpeg_quality(image, 50, 100), lambda: image)
    return tf.cond(tf.random.uniform(()) < 0.3, lambda: _blur(image, tf.random.uniform((), 0.3, 1.5)), lambda: image)


def _blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    offsets = tf.range(-2.0, 3.0)
    kernel_1d = tf.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d /= tf.reduce_sum(kernel_1d)
    kernel = tf.tile((kernel_1d[:, None] * kernel_1d[None, :])[:, :, None, None], (1, 1, 3, 1))
    blurred = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, (1, 1, 1, 1), "SAME")[0]
    return tf.cast(tf.clip_by_value(tf.round(blurred), 0, 255), tf.uint8)
