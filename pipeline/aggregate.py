"""Rules that turn per-frame fake probabilities into one score per video."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.settings import AggregationRule


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


def aggregate(probs: np.ndarray, rule: AggregationRule) -> float:
    if len(probs) == 0:
        raise ValueError("no frame scores to aggregate")
    return RULES[rule](np.asarray(probs, np.float64))
