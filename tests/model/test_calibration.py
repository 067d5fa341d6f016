import numpy as np
import pytest

from pipeline.model.calibration import Calibration, fit_calibration, fit_temperature, with_band_edges


def _logits(n=4000, temperature=3.0, seed=0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logits))).astype(int)
    return true_logits * temperature, labels  # an over-confident model


def test_temperature_undoes_overconfidence():
    logits, labels = _logits()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.15)


def test_each_band_keeps_its_own_error_budget():
    logits, labels = _logits()
    calibration = fit_calibration(logits, labels)
    probs = calibration.probability(logits)
    banded = with_band_edges(calibration, probs, labels, max_fpr_real=0.02, max_fnr_fake=0.10)
    assert np.mean(probs[labels == 0] >= banded.fake_from) <= 0.02 + 1e-9
    assert np.mean(probs[labels == 1] < banded.real_below) <= 0.10 + 1e-9
    assert banded.real_below < banded.threshold < banded.fake_from and banded.band_note == ""
    strict = with_band_edges(calibration, probs, labels, max_fpr_real=0.01, max_fnr_fake=0.01)
    assert strict.fake_from > banded.fake_from and strict.real_below < banded.real_below  # a tighter budget widens


def test_bands_that_meet_say_why():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0, 0.3, 100), rng.uniform(0.7, 1, 100)])  # perfectly separated media
    labels = np.repeat([0, 1], 100)
    banded = with_band_edges(Calibration(1.0, 0.5), scores, labels, max_fpr_real=0.01, max_fnr_fake=0.01)
    assert banded.real_below == banded.fake_from == 0.5
    assert "meet at the decision threshold 0.500" in banded.band_note and "100 real and 100 fake" in banded.band_note
    one_class = with_band_edges(Calibration(1.0, 0.4), scores[:100], labels[:100], max_fpr_real=0.01, max_fnr_fake=0.01)
    assert one_class.real_below == one_class.fake_from == 0.4 and "one class" in one_class.band_note


def test_verdict_bands():
    calibration = Calibration(1.0, 0.5, 0.3, 0.7)
    assert [calibration.verdict(p) for p in (0.1, 0.3, 0.5, 0.7, 0.9)] == [
        "real",
        "uncertain",
        "uncertain",
        "fake",
        "fake",
    ]


def test_single_class_validation_falls_back_to_identity():
    assert fit_calibration(np.array([1.0, 2.0]), np.array([1, 1])) == Calibration(1.0)
