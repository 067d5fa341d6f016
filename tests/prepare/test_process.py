import cv2
import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.media.images import resize_to_square
from pipeline.prepare.process import perceptual_hash
from pipeline.synthetic import photo


@given(
    seed=st.integers(0, 2**16),
    height=st.integers(8, 300),
    width=st.integers(8, 300),
    flat=st.booleans(),
    policy=st.sampled_from(["squash", "letterbox", "center_crop"]),
)
@settings(max_examples=150, deadline=None)
def test_perceptual_hash_has_imagehash_bits(seed, height, width, flat, policy):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3)
    image = np.full(shape, rng.integers(0, 255), np.uint8) if flat else rng.integers(0, 255, shape, np.uint8)
    thumbnail = Image.fromarray(cv2.cvtColor(resize_to_square(image, 32, policy), cv2.COLOR_RGB2GRAY))
    assert perceptual_hash(image, policy) == str(imagehash.phash(thumbnail))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_small_frame_hashes_like_its_stored_square(name):
    """Small frames are hashed before upscaling; the hash must not depend on that shortcut."""
    small = np.asarray(Image.fromarray(photo(name)).resize((32, 32), Image.Resampling.BOX))
    square = resize_to_square(small, 256, "letterbox")
    assert perceptual_hash(small, "letterbox") == perceptual_hash(square, "letterbox")
