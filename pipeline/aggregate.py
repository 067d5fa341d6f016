"""Rules that turn per-frame fake probabilities into one score per video."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def mean(probs: np.ndarray) -> float:
    return float(np.mean(probs))


def top_k_mean(probs: np.ndarray, share: float = 0.25) -> float:
    """Mean of the highest-scoring quarter of frames: a short manipulated stretch still counts."""
    k = max(1, int(np.ceil(len(probs) * share)))
    return float(np.mean(np.sort(probs)[-k:]))


def confident(probs: np.ndarray, high: float = 0.8, low: float = 0.2) -> float:
    """The DFDC winner's rule: trust confident fake frames when there are enough of them."""
    probs = np.asarray(probs)
    fakes = probs[probs > high]
    if len(fakes) > len(probs) / 2.5:
        return float(np.mean(fakes))
    reals = probs[probs < low]
    if len(reals) > 0.9 * len(probs):
        return float(np.mean(reals))
    return float(np.mean(probs))


RULES: dict[str, Callable[[np.ndarray], float]] = {"mean": mean, "topk_mean": top_k_mean, "confident": confident}


def choose_rule(frame_scores: list[np.ndarray], labels: np.ndarray) -> tuple[str, dict[str, float]]:
    """The rule whose media scores separate real from fake best (ROC-AUC); ``mean`` wins ties.

    ``frame_scores`` holds the calibrated frame probabilities of each validation item.
    """
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return "mean", {}
    aucs = {rule: float(roc_auc_score(labels, [RULES[rule](np.asarray(p)) for p in frame_scores])) for rule in RULES}
    return max(RULES, key=lambda rule: (aucs[rule], rule == "mean")), aucs


def aggregate(probs: np.ndarray, rule: str) -> float:
    if len(probs) == 0:
        raise ValueError("no frame scores to aggregate")
    return RULES[rule](np.asarray(probs, np.float64))
