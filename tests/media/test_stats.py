"""Brightness: mean luma of decoded frames, the same at training (prepare) and at scoring."""

import numpy as np
import pytest

from pipeline.media.stats import brightness


def test_brightness_runs_from_black_to_white_and_weighs_green_most():
    black, white = np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 255, np.uint8)
    assert (brightness([black]), brightness([white]), brightness([black, white])) == (0.0, 1.0, 0.5)
    green, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    green[..., 1], blue[..., 2] = 255, 255
    assert brightness([green]) == pytest.approx(0.587, abs=1e-3)
    assert brightness([blue]) == pytest.approx(0.114, abs=1e-3)


def test_no_frames_have_no_brightness():
    assert brightness([]) is None
