"""Grad-CAM from the served model: it equals TensorFlow's gradients, and it points at what the score depends on."""

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pipeline.media.images import encode_jpeg
from pipeline.model.explain import grad_cam, overlay
from pipeline.model.onnx_export import CAM, LOGIT, keras_outputs
from pipeline.model.train import backbone_of, build_classifier, serving_copy, train_two_phase
from pipeline.settings import ModelSettings
from pipeline.synthetic import PHOTOS, photo, random_crop

pytestmark = pytest.mark.slow
SIZE, CELL, BLOCK = 128, 32, 2  # a 128 px input ends on a 4x4 map: one cell per 32 px square


def _gradient_grad_cam(model, frames: np.ndarray) -> np.ndarray:
    """Textbook Grad-CAM: channel weights are the mean gradient of the logit over the last block's map."""
    features = backbone_of(model)(tf.constant(frames), training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        logit = model.get_layer("logit")(model.get_layer("pool")(features))
    gradients = tape.gradient(logit, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    heat = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
    return heat / np.maximum(heat.max(axis=(1, 2), keepdims=True), 1e-12)


def test_the_served_class_activation_map_is_the_gradient_grad_cam():
    settings = ModelSettings(backbone="efficientnet_lite0", weights="imagenet", image_size=SIZE)
    model = serving_copy(build_classifier(settings, frame_size=SIZE), settings)
    rng = np.random.default_rng(0)
    kernel, _ = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([rng.normal(0, 0.05, kernel.shape).astype("float32"), np.array([0.7], "f4")])
    frames = np.stack([random_crop(photo(name), rng, SIZE) for name in ("coffee", "astronaut", "chelsea")])
    served = keras_outputs(model, frames.astype(np.float32))
    np.testing.assert_allclose(served[CAM].mean(axis=(1, 2)), served[LOGIT], atol=1e-4)  # the logit is the map's mean
    np.testing.assert_allclose(grad_cam(served[CAM], 0.7), _gradient_grad_cam(model, frames.astype(np.float32)),
                               atol=1e-4)  # fmt: skip
    shown = overlay(frames[0], grad_cam(served[CAM], 0.7)[0], size=160)
    assert shown.shape == (160, 160, 3) and shown.dtype == np.uint8


def _with_artefact(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """One 32 px cell replaced by a generator-like checkerboard texture; returns the image and the cell."""
    row, col = (int(v) for v in rng.integers(0, SIZE // CELL, 2))
    faked = image.copy()
    checker = (np.indices((CELL, CELL)).sum(axis=0) % 2)[..., None] * rng.integers(120, 255, 3)
    faked[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = checker.astype(np.uint8)
    return faked, (row, col)


def _occluded(image: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    """The image with a square of BLOCK x BLOCK cells from ``corner`` (in cells) filled with its mean colour."""
    hidden = image.copy()
    top, left = (c * CELL for c in corner)
    hidden[top : top + BLOCK * CELL, left : left + BLOCK * CELL] = image.mean(axis=(0, 1))
    return hidden


def test_occluding_the_hottest_region_lowers_the_score_more_than_occluding_another(tmp_path):
    """A model trained here to find a checkerboard cell; its heatmap must lead to the evidence.

    A 4x4 map from a backbone with wide receptive fields spreads the heat over the artefact's
    neighbours, so regions are 2x2 cells: the hottest such square against others of the same size.
    """
    rng = np.random.default_rng(1)
    rows = []
    for index in range(240):
        real = cv2.resize(random_crop(photo(PHOTOS[index % len(PHOTOS)]), rng, 192), (SIZE, SIZE))
        for label, image in ((0, real), (1, _with_artefact(real, rng)[0])):
            path = tmp_path / f"{index}-{label}.jpg"
            path.write_bytes(encode_jpeg(image))
            rows.append({"frame_path": str(path), "label": label, "split": "val" if index % 6 == 0 else "train",
                         "sample_weight": 1.0, "frame_size": SIZE})  # fmt: skip
    settings = ModelSettings(
        backbone="efficientnet_lite0",
        weights="imagenet",
        image_size=SIZE,
        batch_size=32,
        head_epochs=6,
        fine_tune_epochs=0,
        augmentation="none",
        early_stopping_patience=6,
    )
    model = train_two_phase(pd.DataFrame(rows), settings, workdir=tmp_path / "run", seed=0).model
    bias = float(model.get_layer("logit").get_weights()[1][0])
    corners = [(r, c) for r in range(SIZE // CELL - BLOCK + 1) for c in range(SIZE // CELL - BLOCK + 1)]

    top_drops, other_drops = [], []
    for _ in range(24):
        real = cv2.resize(random_crop(photo(PHOTOS[int(rng.integers(len(PHOTOS)))]), rng, 192), (SIZE, SIZE))
        faked, _ = _with_artefact(real, rng)
        served = keras_outputs(model, faked[None].astype(np.float32))
        heat = grad_cam(served[CAM], bias)[0]
        hottest = max(corners, key=lambda c: heat[c[0] : c[0] + BLOCK, c[1] : c[1] + BLOCK].sum())
        others = [corners[i] for i in rng.choice(len(corners), 4, replace=False) if corners[i] != hottest]
        batch = np.stack([_occluded(faked, hottest)] + [_occluded(faked, corner) for corner in others])
        logits = keras_outputs(model, batch.astype(np.float32))[LOGIT]
        top_drops.append(served[LOGIT][0] - logits[0])
        other_drops.append(float(np.mean(served[LOGIT][0] - logits[1:])))
    top_drops, other_drops = np.array(top_drops), np.array(other_drops)
    assert top_drops.mean() > other_drops.mean() + 1.0
    assert np.mean(top_drops > other_drops) >= 0.8
