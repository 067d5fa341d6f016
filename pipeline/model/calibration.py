"""Temperature scaling, decision threshold and verdict bands, all fitted on validation data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_curve


@dataclass(frozen=True)
class Calibration:
    """Turns a model logit into a calibrated probability and a three-band verdict."""

    temperature: float = 1.0
    threshold: float = 0.5  # calibrated probability at or above which a frame counts as fake
    real_below: float = 0.5  # media scored below this are 'real'
    fake_from: float = 0.5  # media scored at or above this are 'fake'; between is 'uncertain'

    def probability(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / self.temperature))

    def verdict(self, probability: float) -> str:
        if probability >= self.fake_from:
            return "fake"
        return "real" if probability < self.real_below else "uncertain"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises validation log loss (1.0 when it cannot be fitted)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    if len(np.unique(labels)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, z) - labels * z))

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def fit_calibration(logits: np.ndarray, labels: np.ndarray, *, max_fpr_real: float) -> Calibration:
    """Fit temperature, an accuracy-maximising threshold, and frame-level band edges on validation data."""
    labels = np.asarray(labels)
    temperature = fit_temperature(logits, labels)
    probs = Calibration(temperature).probability(logits)
    if len(np.unique(labels)) < 2:
        return Calibration(temperature)
    fpr, tpr, thresholds = roc_curve(labels, probs)
    threshold = float(np.clip(thresholds[np.argmax(tpr - fpr)], 0.0, 1.0))
    return with_band_edges(Calibration(temperature, threshold), probs, labels, max_fpr_real=max_fpr_real)


def with_band_edges(calibration: Calibration, scores: np.ndarray, labels: np.ndarray, *,
                    max_fpr_real: float) -> Calibration:  # fmt: skip
    """Band edges fitted on calibrated validation scores (of frames, or of whole media).

    ``fake_from`` lets at most ``max_fpr_real`` of the real items into the fake band;
    ``real_below`` lets at most that share of the fake items into the real band.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return calibration
    fake_from = float(max(_edge_above(scores[labels == 0], max_fpr_real), calibration.threshold))
    real_below = float(min(_edge_below(scores[labels == 1], max_fpr_real), calibration.threshold))
    return replace(calibration, real_below=real_below, fake_from=fake_from)


def _edge_above(scores: np.ndarray, share: float) -> float:
    """Smallest edge with at most ``share`` of ``scores`` at or above it."""
    allowed = int(np.floor(share * len(scores)))
    return float(np.nextafter(np.sort(scores)[::-1][allowed], np.inf))


def _edge_below(scores: np.ndarray, share: float) -> float:
    """Largest edge with at most ``share`` of ``scores`` strictly below it."""
    return float(np.sort(scores)[int(np.floor(share * len(scores)))])
