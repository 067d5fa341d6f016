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
    band_note: str = ""  # why the bands sit where they do, when that is not plain from the budgets

    def probability(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / self.temperature))

    def verdict(self, probability: float) -> str:
        if probability >= self.fake_from:
            return "fake"
        return "real" if probability < self.real_below else "uncertain"

    def to_dict(self) -> dict[str, float | str]:
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


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit the temperature and an accuracy-maximising (Youden) threshold on validation frames."""
    labels = np.asarray(labels)
    temperature = fit_temperature(logits, labels)
    if len(np.unique(labels)) < 2:
        return Calibration(temperature)
    probs = Calibration(temperature).probability(logits)
    fpr, tpr, thresholds = roc_curve(labels, probs)
    return Calibration(temperature, float(np.clip(thresholds[np.argmax(tpr - fpr)], 0.0, 1.0)))


def with_band_edges(calibration: Calibration, scores: np.ndarray, labels: np.ndarray, *,
                    max_fpr_real: float, max_fnr_fake: float) -> Calibration:  # fmt: skip
    """Verdict band edges fitted on calibrated validation scores of whole media.

    Each confident band has its own error budget: ``fake_from`` lets at most ``max_fpr_real`` of
    the real media into the fake band, ``real_below`` at most ``max_fnr_fake`` of the fakes into
    the real band; neither band reaches past the decision threshold. Where both budgets hold at
    the threshold itself the bands meet there, and ``band_note`` says so: only media outside the
    training distribution are then uncertain.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    threshold = calibration.threshold
    if len(np.unique(labels)) < 2:
        note = f"validation media hold one class only: the bands meet at the threshold {threshold:.3f}"
        return replace(calibration, real_below=threshold, fake_from=threshold, band_note=note)
    fake_from = float(max(_edge_above(scores[labels == 0], max_fpr_real), threshold))
    real_below = float(min(_edge_below(scores[labels == 1], max_fnr_fake), threshold))
    note = ""
    if real_below == fake_from:
        note = (
            f"the bands meet at the decision threshold {threshold:.3f}: of {int(np.sum(labels == 0))} real and "
            f"{int(np.sum(labels == 1))} fake validation media, at most {max_fpr_real:.1%} of the real score at or "
            f"above it and at most {max_fnr_fake:.1%} of the fakes below it, so both budgets hold with no band between"
        )
    return replace(calibration, real_below=real_below, fake_from=fake_from, band_note=note)


def _edge_above(scores: np.ndarray, share: float) -> float:
    """Smallest edge with at most ``share`` of ``scores`` at or above it."""
    allowed = int(np.floor(share * len(scores)))
    return float(np.nextafter(np.sort(scores)[::-1][allowed], np.inf))


def _edge_below(scores: np.ndarray, share: float) -> float:
    """Largest edge with at most ``share`` of ``scores`` strictly below it."""
    return float(np.sort(scores)[int(np.floor(share * len(scores)))])
