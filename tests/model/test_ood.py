"""Out-of-distribution checks: feature-space detectors, the validation threshold and the input profile."""

import numpy as np
import pytest

from pipeline.media.stats import MediaStats
from pipeline.model.ood import InputProfile, KnnDistance, Mahalanobis, TrainingDistribution, fit_distribution

DIMENSIONS = 64


def _clusters(rng, n, *, centre_scale=4.0, spread=1.0):
    """Two class clusters of embeddings (ReLU-like, non-negative), with labels."""
    centres = np.abs(rng.normal(0, centre_scale, (2, DIMENSIONS)))
    labels = rng.integers(0, 2, n)
    return np.abs(centres[labels] + rng.normal(0, spread, (n, DIMENSIONS))), labels, centres


def _photos(n=20, side=192):
    return [MediaStats("image", side + i, side, "jpeg", bits_per_pixel=2.0) for i in range(n)]


@pytest.mark.parametrize("method", [KnnDistance, Mahalanobis])
def test_unseen_embeddings_score_higher_than_held_out_ones_from_the_training_clusters(method):
    rng = np.random.default_rng(0)
    train, labels, centres = _clusters(rng, 400)
    held_out = np.abs(centres[rng.integers(0, 2, 100)] + rng.normal(0, 1.0, (100, DIMENSIONS)))
    unseen = np.abs(rng.normal(0, 4.0, (100, DIMENSIONS)))  # another cluster altogether
    detector = method.fit(train, labels)
    inside, outside = detector.score(held_out), detector.score(unseen)
    assert np.percentile(outside, 5) > np.percentile(inside, 95)


def test_knn_grows_k_with_the_reference_set_and_is_a_cosine_distance():
    rng = np.random.default_rng(0)
    assert KnnDistance.fit(rng.random((100, 8)), np.zeros(100)).k == 1
    assert KnnDistance.fit(rng.random((2048, 8)), np.zeros(2048)).k == 10
    references = np.eye(3)
    detector = KnnDistance(references, k=1)
    np.testing.assert_allclose(detector.score(np.array([[2.0, 0, 0], [1.0, 1.0, 0]])), [0.0, 1 - np.sqrt(0.5)])


def test_the_threshold_accepts_the_asked_share_of_validation_media():
    rng = np.random.default_rng(0)
    train, labels, centres = _clusters(rng, 300)
    val_media = [np.abs(centres[rng.integers(0, 2)] + rng.normal(0, 1.0, (5, DIMENSIONS))) for _ in range(200)]
    distribution, val_scores = fit_distribution("knn", train, labels, val_media, _photos(), accept=0.95)
    assert np.mean(val_scores <= distribution.threshold) >= 0.95
    assert np.mean(val_scores < distribution.threshold) < 0.97  # not loosened beyond the asked share


def test_a_distribution_saved_in_a_bundle_folder_scores_the_same_after_loading(tmp_path):
    rng = np.random.default_rng(0)
    train, labels, centres = _clusters(rng, 300)
    val_media = [train[i : i + 3] for i in range(0, 60, 3)]
    probe = np.abs(rng.normal(0, 4.0, (7, DIMENSIONS)))
    for method in ("knn", "mahalanobis"):
        distribution, _ = fit_distribution(method, train, labels, val_media, _photos(), accept=0.9)
        loaded = TrainingDistribution.load(tmp_path, distribution.save(tmp_path))
        assert loaded.threshold == distribution.threshold and loaded.profile == distribution.profile
        np.testing.assert_allclose(loaded.detector.score(probe), distribution.detector.score(probe), rtol=2e-3)


def test_media_unlike_the_training_media_by_kind_resolution_or_codec_are_outside():
    profile = InputProfile.fit(_photos() + [MediaStats("video", 320, 240, "h264", 25.0, 10.0, 0.1)])
    assert profile.unlike(MediaStats("image", 300, 200, "jpeg")) == []
    assert profile.unlike(MediaStats("video", 640, 480, "h264", 30.0, 60.0)) == []
    assert "training images were 192-192 px" in profile.unlike(MediaStats("image", 32, 32, "jpeg"))[0]
    assert "training images were 192-192 px" in profile.unlike(MediaStats("image", 4000, 3000, "jpeg"))[0]
    assert profile.unlike(MediaStats("image", 200, 200, "png")) == ["png: training images were jpeg"]
    assert profile.unlike(MediaStats("video", 320, 240, "vp9")) == ["vp9: training videos were h264"]
    only_images = InputProfile.fit(_photos())
    assert only_images.unlike(MediaStats("video", 192, 192, "h264")) == [
        "a video: the model was trained on images only"
    ]


def test_an_assessment_is_outside_by_features_or_by_input_statistics():
    rng = np.random.default_rng(0)
    train, labels, centres = _clusters(rng, 300)
    val_media = [train[i : i + 3] for i in range(0, 60, 3)]
    distribution, _ = fit_distribution("knn", train, labels, val_media, _photos(), accept=0.95)
    photo = MediaStats("image", 200, 192, "jpeg")
    near = distribution.assess(train[:2] + 0.01, photo)
    assert not near.outside and near.details() == [] and len(near.frame_scores) == 2
    far = distribution.assess(np.abs(rng.normal(0, 4.0, (3, DIMENSIONS))), photo)
    assert far.outside and far.feature_outside and far.details()[0].startswith("features: knn score")
    small = distribution.assess(train[:2], MediaStats("image", 32, 32, "jpeg"))
    assert small.outside and not small.feature_outside and "32x32" in small.details()[0]
    blind = distribution.assess(None, photo)  # a model that gives no embeddings: only the input profile decides
    assert blind.score is None and not blind.outside
    assert far.to_dict()["outside"] is True and far.to_dict()["details"] == far.details()
