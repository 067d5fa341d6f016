"""The Lite0 conversion is proven on ImageNet photos that ship with scikit-image."""

import cv2
import numpy as np
import pytest
import skimage.data

from pipeline.model.backbones import (
    BackboneWeightsUnavailable,
    block_prefixes,
    build_backbone,
    build_efficientnet_lite0,
    imagenet_top_k,
)

TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 282, 285, 967
LITE0_CHECKPOINT_VALUES = 4_694_024  # all tensors of the packaged checkpoint but the BatchNorm step counters


@pytest.fixture(scope="module")
def lite0_classifier():
    return build_efficientnet_lite0(weights="imagenet", image_size=224, include_top=True)


def _photo(name: str) -> np.ndarray:
    return cv2.resize(getattr(skimage.data, name)(), (224, 224), interpolation=cv2.INTER_AREA)


def test_converted_lite0_recognises_imagenet_photos(lite0_classifier):
    cat, coffee = imagenet_top_k(lite0_classifier, np.stack([_photo("chelsea"), _photo("coffee")]))
    assert {TIGER_CAT, EGYPTIAN_CAT} <= {c for c, _ in cat[:3]}
    assert coffee[0][0] == ESPRESSO and coffee[0][1] > 0.8


def test_lite0_has_b0_block_names_and_no_squeeze_excitation(lite0_classifier):
    assert block_prefixes(lite0_classifier)[:2] == ["stem", "block1a"]
    assert block_prefixes(lite0_classifier)[-2:] == ["block7a", "top"]
    assert len(block_prefixes(lite0_classifier)) == 18
    assert not any("se_" in layer.name for layer in lite0_classifier.layers)
    assert lite0_classifier.count_params() == LITE0_CHECKPOINT_VALUES  # every tensor mapped, none left over


def test_b0_without_weights_builds_offline():
    backbone = build_backbone("efficientnet_b0", weights="none", image_size=64)
    assert backbone.output_shape == (None, 2, 2, 1280)
    assert "block6d" in block_prefixes(backbone)


def test_b0_imagenet_offline_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    try:
        build_backbone("efficientnet_b0", weights="imagenet", image_size=64)
    except BackboneWeightsUnavailable as error:
        assert "efficientnetb0_notop.h5" in str(error) and "efficientnet_lite0" in str(error)
    else:
        pytest.skip("this machine can download the B0 weights, so there is no offline error to check")
