import cv2
import imagehash
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.prepare.process import perceptual_hash


@given(seed=st.integers(0, 2**16), size=st.sampled_from([32, 64, 256]), flat=st.booleans())
@settings(max_examples=150, deadline=None)
def test_perceptual_hash_has_imagehash_bits(seed, size, flat):
    rng = np.random.default_rng(seed)
    shape = (size, size, 3)
    image = np.full(shape, rng.integers(0, 255), np.uint8) if flat else rng.integers(0, 255, shape, np.uint8)
    thumbnail = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    assert perceptual_hash(image) == str(imagehash.phash(Image.fromarray(thumbnail)))
