"""The tf.data input: resizing identical to the served model's, caching, whole-list shuffling."""

import keras
import numpy as np
import pandas as pd

from pipeline.media.images import encode_jpeg
from pipeline.model.data import frame_dataset
from pipeline.synthetic import photo


def _manifest(tmp_path, count: int = 6, size: int = 128) -> pd.DataFrame:
    rows = []
    for i in range(count):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(encode_jpeg(np.ascontiguousarray(np.roll(photo("astronaut"), 40 * i, axis=1)[:size, :size])))
        rows.append({"frame_path": str(path), "label": i % 2, "sample_weight": 1.0, "frame_size": size})
    return pd.DataFrame(rows)


def test_resizing_in_the_pipeline_matches_the_served_models_resizing_layer(tmp_path):
    manifest = _manifest(tmp_path)
    full = np.concatenate([x for x, _ in frame_dataset(manifest, batch_size=4, training=False, seed=0)])
    small = np.concatenate([x for x, _ in frame_dataset(manifest, batch_size=4, training=False, seed=0, image_size=64)])
    assert full.shape[1:] == (128, 128, 3) and small.shape[1:] == (64, 64, 3)
    in_model = np.asarray(keras.layers.Resizing(64, 64)(full))
    assert np.abs(small - in_model).max() <= 0.5  # only the rounding back to uint8 differs


def test_training_batches_shuffle_the_whole_list_each_epoch_and_carry_weights(tmp_path):
    manifest = _manifest(tmp_path, count=8)
    in_order = [
        float(np.mean(x))
        for x, _ in frame_dataset(manifest, batch_size=8, training=False, seed=0, image_size=32).unbatch()
    ]
    dataset = frame_dataset(manifest, batch_size=8, training=True, seed=3, image_size=32)
    images, labels, weights = next(iter(dataset))
    assert images.shape == (8, 32, 32, 3) and weights.shape == (8,) and labels.shape == (8,)
    epochs = [[float(np.mean(x)) for x in next(iter(dataset))[0]] for _ in range(3)]
    assert all(sorted(order) == sorted(in_order) for order in epochs)  # every item, once per epoch
    assert epochs[0] != in_order and len({tuple(order) for order in epochs}) > 1  # reshuffled every epoch
