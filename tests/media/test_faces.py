"""Face crops with OpenCV's shipped detector, on real photographs."""

import numpy as np

from pipeline.media.faces import face_region, frame_region, largest_face
from pipeline.synthetic import photo


def test_finds_the_astronauts_face_and_crops_a_square_around_it():
    rgb = photo("astronaut")  # NASA portrait of Eileen Collins, face at about (180-270, 70-160)
    x, y, w, h = largest_face(rgb)
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200 and 60 < w < 200
    crop = face_region(rgb, margin=0.3)
    assert crop.shape[0] == crop.shape[1] and w < crop.shape[0] < rgb.shape[0]


def test_the_face_is_found_in_a_wide_frame_and_the_crop_stays_inside_it():
    wide = np.zeros((720, 1280, 3), np.uint8)
    wide[100:612, 1000:1280] = photo("astronaut")[:, :280]  # face near the right edge
    crop = face_region(wide, margin=1.0)
    assert crop.shape[0] == crop.shape[1] <= 720 and crop.any()


def test_frames_without_a_face_stay_whole():
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert largest_face(noise) is None
    assert face_region(noise) is noise
    assert frame_region(photo("astronaut"), "full").shape == (512, 512, 3)
