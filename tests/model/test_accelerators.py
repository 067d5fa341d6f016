"""GPU switches: what auto decides on this machine, and mixed precision really training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.model.accelerators import detect, training_scope
from pipeline.model.train import build_classifier
from pipeline.settings import ModelSettings


def test_auto_follows_the_gpus_present():
    gpus = len(tf.config.list_physical_devices("GPU"))
    accelerator = detect(ModelSettings())
    assert accelerator.describe() == {
        "gpus": gpus,
        "mixed_precision": gpus > 0,
        "xla": gpus > 0,
        "replicas": max(1, gpus),
    }
    forced = detect(ModelSettings(mixed_precision="on", xla="off"))
    assert forced.mixed_precision and not forced.xla


@pytest.mark.slow
def test_mixed_precision_trains_with_float32_logits_and_restores_the_policy():
    settings = ModelSettings(backbone="efficientnet_lite0", weights="none", image_size=32, mixed_precision="on")
    accelerator = detect(settings)
    with training_scope(accelerator):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        model = build_classifier(settings, frame_size=32)
        model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
        frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)).astype(np.float32)
        history = model.fit(frames, np.array([0, 1] * 4, np.float32), epochs=2, verbose=0)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("logit").compute_dtype == "float32" and model(frames).dtype == "float32"
    assert model.get_layer("pool").compute_dtype == "float16"
    assert np.isfinite(history.history["loss"]).all()
