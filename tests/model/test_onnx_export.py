"""The served ONNX form matches Keras, and a bundle serves through ONNX Runtime."""

import numpy as np
import pytest

from pipeline.model.bundle import load_bundle, save_bundle
from pipeline.model.calibration import Calibration
from pipeline.model.onnx_export import OnnxExportError, export_onnx, keras_logits
from pipeline.model.train import build_classifier, serving_copy
from pipeline.settings import ModelSettings

pytestmark = pytest.mark.slow
SETTINGS = ModelSettings(backbone="efficientnet_lite0", weights="imagenet", image_size=64)


@pytest.fixture(scope="module")
def serving():
    return serving_copy(build_classifier(SETTINGS, frame_size=96), SETTINGS)


@pytest.fixture(scope="module")
def frames():
    from pipeline.synthetic import photo

    rng = np.random.default_rng(0)
    return np.stack([photo(name)[:96, :96] for name in ("astronaut", "coffee", "chelsea")] +
                    [rng.integers(0, 255, (96, 96, 3)) for _ in range(3)]).astype(np.float32)  # fmt: skip


def test_serving_copy_has_no_augmentation_and_the_same_outputs(serving, frames):
    assert "augment" not in {layer.name for layer in serving.layers}
    trained = build_classifier(SETTINGS, frame_size=96)
    copy = serving_copy(trained, SETTINGS)
    np.testing.assert_allclose(keras_logits(copy, frames), keras_logits(trained, frames), atol=1e-6)


def test_bundle_serves_with_onnx_runtime_matching_keras(serving, frames, tmp_path):
    folder = save_bundle(tmp_path / "bundle", serving, Calibration(2.0, 0.5, 0.3, 0.7), {"frame_size": 96},
                         check_frames=frames[:4])  # fmt: skip
    bundle = load_bundle(folder)
    assert bundle.runtime == "onnxruntime" and bundle.metadata["onnx_max_abs_diff"] <= 1e-4
    np.testing.assert_allclose(bundle.logits(frames, batch_size=4), keras_logits(serving, frames), atol=1e-4)
    assert bundle.calibration.temperature == 2.0


def test_an_export_that_does_not_match_is_refused(serving, frames, tmp_path):
    with pytest.raises(OnnxExportError, match="differs from Keras"):
        export_onnx(serving, tmp_path / "m.onnx", check_frames=frames, tolerance=-1.0)
    assert not (tmp_path / "m.onnx").exists()


def test_test_time_flip_serves_the_mean_logit_of_both_mirror_images(frames, tmp_path):
    flipping = SETTINGS.model_copy(update={"test_time_flip": True})
    trained = build_classifier(flipping, frame_size=96)
    single, mirrored = serving_copy(trained, SETTINGS), serving_copy(trained, flipping)
    expected = (keras_logits(single, frames) + keras_logits(single, frames[:, :, ::-1].copy())) / 2
    np.testing.assert_allclose(keras_logits(mirrored, frames), expected, atol=1e-5)
    assert not np.allclose(keras_logits(single, frames), expected, atol=1e-3)  # the mirror view really counts

    folder = save_bundle(tmp_path / "bundle", mirrored, Calibration(), {"frame_size": 96}, check_frames=frames[:4])
    bundle = load_bundle(folder)
    assert bundle.runtime == "onnxruntime"
    np.testing.assert_allclose(bundle.logits(frames, batch_size=4), expected, atol=1e-4)
    np.testing.assert_allclose(keras_logits(bundle.keras_model, frames), expected, atol=1e-5)  # reloads from .keras
