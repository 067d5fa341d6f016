import numpy as np
import pytest

from pipeline.model.calibration import Calibration, fit_calibration, fit_temperature


def _logits(n=4000, temperature=3.0, seed=0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logits))).astype(int)
    return true_logits * temperature, labels  # an over-confident model


def test_temperature_undoes_overconfidence():
    logits, labels = _logits()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.15)


def test_bands_respect_the_false_positive_budget():
    logits, labels = _logits()
    calibration = fit_calibration(logits, labels, max_fpr_real=0.05)
    probs = calibration.probability(logits)
    assert np.mean(probs[labels == 0] >= calibration.fake_from) <= 0.05 + 1e-9
    assert np.mean(probs[labels == 1] < calibration.real_below) <= 0.05 + 1e-9
    assert calibration.real_below <= calibration.threshold <= calibration.fake_from


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
    assert fit_calibration(np.array([1.0, 2.0]), np.array([1, 1]), max_fpr_real=0.05) == Calibration(1.0)
