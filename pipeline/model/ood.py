"""Does a media item look like the model's training data? Where it does not, the verdict abstains.

Two checks, both fitted at training time and stored in the model bundle:

* **Feature space.** The served model returns each frame's embedding beside its logit (the pooled
  features the logit is computed from). A detector fitted on training embeddings scores how far a
  frame lies from them; a media item scores the mean over its frames; the threshold accepts
  ``accept`` (e.g. 95%) of the in-distribution validation media.
* **Input statistics.** The kinds, resolutions and codecs of the training media: a kind or codec
  the model never saw, or a resolution far outside its range, is outside whatever the features say.

``bench/trust_bench.py`` measures the methods against each other on real out-of-distribution sets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.media.stats import MediaStats

OodMethod = Literal["knn", "mahalanobis"]
ARRAYS_FILE = "ood.npz"
SIZE_MARGIN = 2.0  # resolutions within half the smallest and twice the largest training short side are in range
REFERENCES_PER_NEIGHBOUR = 200  # k grows with the reference set (Sun et al.): 2,048 references give k = 10


class KnnDistance:
    """Cosine distance from each frame to its k-th nearest training frame (Sun et al., ICML 2022).

    Embeddings are L2-normalised, so no distribution shape is assumed; the references are a
    class-stratified sample of training frames, stored as float16. ``k`` grows with the number of
    references: with a small training set a larger k reaches into other content and hides how
    close the nearest frames are.
    """

    name = "knn"

    def __init__(self, references: np.ndarray, *, k: int) -> None:
        self.references = _unit(np.asarray(references, np.float32))
        self.k = max(1, min(k, len(self.references)))

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, *, k: int | None = None) -> KnnDistance:
        return cls(embeddings, k=k or max(1, round(len(embeddings) / REFERENCES_PER_NEIGHBOUR)))

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        similarity = _unit(np.asarray(embeddings, np.float32)) @ self.references.T
        return 1.0 - np.partition(similarity, -self.k, axis=1)[:, -self.k]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"references": self.references.astype(np.float16)}

    def params(self) -> dict:
        return {"k": self.k, "references": len(self.references)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict) -> KnnDistance:
        return cls(arrays["references"], k=params["k"])


class Mahalanobis:
    """Distance to the nearest class mean under one shared covariance (Lee et al., NeurIPS 2018).

    The covariance is shrunk (Ledoit-Wolf), so a few hundred frames of 1,280 features still give
    an invertible estimate.
    """

    name = "mahalanobis"

    def __init__(self, means: np.ndarray, precision: np.ndarray) -> None:
        self.means, self.precision = np.asarray(means, np.float64), np.asarray(precision, np.float64)

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray) -> Mahalanobis:
        from sklearn.covariance import LedoitWolf

        embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([embeddings[labels == c].mean(axis=0) for c in classes])
        centred = embeddings - means[np.searchsorted(classes, labels)]
        return cls(means, LedoitWolf(assume_centered=True).fit(centred).precision_)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, np.float64)
        squared = [
            np.einsum("ij,ij->i", (embeddings - mean) @ self.precision, embeddings - mean) for mean in self.means
        ]
        return np.sqrt(np.maximum(np.min(squared, axis=0), 0.0))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means.astype(np.float32), "precision": self.precision.astype(np.float32)}

    def params(self) -> dict:
        return {"classes": len(self.means)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict) -> Mahalanobis:
        return cls(arrays["means"], arrays["precision"])


Detector = KnnDistance | Mahalanobis
DETECTORS: dict[str, type[KnnDistance] | type[Mahalanobis]] = {"knn": KnnDistance, "mahalanobis": Mahalanobis}


def fit_detector(method: OodMethod, embeddings: np.ndarray, labels: np.ndarray) -> Detector:
    if method not in DETECTORS:
        raise ValueError(f"unknown out-of-distribution method {method!r}; choose {' or '.join(DETECTORS)}")
    return DETECTORS[method].fit(embeddings, labels)


def media_score(detector: Detector, embeddings: np.ndarray) -> tuple[float, np.ndarray]:
    """A media item's score (the mean over its frames) and each frame's."""
    frames = detector.score(embeddings)
    return float(np.mean(frames)), frames


@dataclass(frozen=True)
class InputProfile:
    """The training media's input statistics, per kind (``image``, ``video``).

    For each: how many media, the range of short sides, the codecs seen (image formats or video
    codecs, with counts), and the ranges or quantiles of frame rate, duration and bits per pixel.
    Only kind, resolution and codec decide; the rest describes the data (model card, drift).
    """

    kinds: dict[str, dict]

    @classmethod
    def fit(cls, stats: list[MediaStats]) -> InputProfile:
        kinds = {}
        for kind in sorted({s.kind for s in stats}):
            same = [s for s in stats if s.kind == kind]
            codecs = Counter(s.codec for s in same if s.codec != "unknown")
            kinds[kind] = {
                "media": len(same),
                "short_side": [min(s.short_side for s in same), max(s.short_side for s in same)],
                "codecs": dict(codecs.most_common()),
                "resolutions": {
                    f"{w}x{h}": n for (w, h), n in Counter((s.width, s.height) for s in same).most_common(5)
                },
                "fps": _range([s.fps for s in same]),
                "duration_s": _range([s.duration_s for s in same]),
                "bits_per_pixel": [
                    round(float(q), 4) for q in np.quantile([s.bits_per_pixel for s in same], [0.05, 0.5, 0.95])
                ],
            }
        return cls(kinds)

    def unlike(self, stats: MediaStats) -> list[str]:
        """Why ``stats`` lie outside the training media's, one reason per statistic (none: within)."""
        seen = self.kinds.get(stats.kind)
        if seen is None:
            return [f"a {stats.kind}: the model was trained on {' and '.join(f'{k}s' for k in self.kinds)} only"]
        reasons = []
        low, high = seen["short_side"]
        if not low / SIZE_MARGIN <= stats.short_side <= high * SIZE_MARGIN:
            reasons.append(
                f"{stats.width}x{stats.height}: training {stats.kind}s were {low}-{high} px on the short side"
            )
        if seen["codecs"] and stats.codec not in seen["codecs"]:
            reasons.append(f"{stats.codec}: training {stats.kind}s were {', '.join(seen['codecs'])}")
        return reasons


@dataclass(frozen=True)
class OodAssessment:
    """Where one media item stands against the training data."""

    method: str
    score: float | None  # None where the model has no embeddings (a bundle from before these checks)
    threshold: float
    frame_scores: list[float]
    input_reasons: list[str]

    @property
    def feature_outside(self) -> bool:
        return self.score is not None and self.score > self.threshold

    @property
    def outside(self) -> bool:
        return self.feature_outside or bool(self.input_reasons)

    def details(self) -> list[str]:
        """Each reason the item is outside, in words."""
        found = list(self.input_reasons)
        if self.feature_outside:
            found.insert(0, f"features: {self.method} score {self.score:.3g} above the threshold {self.threshold:.3g}")
        return found

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "score": self.score,
            "threshold": self.threshold,
            "outside": self.outside,
            "feature_outside": self.feature_outside,
            "input_reasons": self.input_reasons,
            "details": self.details(),
        }


@dataclass
class TrainingDistribution:
    """What a model was trained on, as its bundle stores it: detector, threshold and input profile."""

    detector: Detector
    threshold: float
    accept: float  # share of in-distribution validation media at or below the threshold
    profile: InputProfile

    def assess(self, embeddings: np.ndarray | None, stats: MediaStats) -> OodAssessment:
        score, frames = media_score(self.detector, embeddings) if embeddings is not None else (None, np.zeros(0))
        return OodAssessment(self.detector.name, score, self.threshold, [float(f) for f in frames],
                             self.profile.unlike(stats))  # fmt: skip

    def describe(self) -> dict:
        return {
            "method": self.detector.name,
            **self.detector.params(),
            "threshold": self.threshold,
            "accept": self.accept,
            "input_profile": self.profile.kinds,
        }

    def save(self, folder: Path) -> dict:
        """Write the detector's arrays into ``folder``; return the metadata that goes with them."""
        np.savez_compressed(folder / ARRAYS_FILE, **self.detector.arrays())
        return self.describe()

    @classmethod
    def load(cls, folder: Path, metadata: dict) -> TrainingDistribution:
        with np.load(folder / ARRAYS_FILE) as arrays:
            detector = DETECTORS[metadata["method"]].from_arrays(dict(arrays), metadata)
        return cls(detector, float(metadata["threshold"]), float(metadata["accept"]),
                   InputProfile(metadata["input_profile"]))  # fmt: skip


def fit_distribution(
    method: OodMethod,
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    val_media_embeddings: list[np.ndarray],
    train_stats: list[MediaStats],
    *,
    accept: float,
) -> tuple[TrainingDistribution, np.ndarray]:
    """Fit the detector on training frames and its threshold on validation media.

    Returns the distribution and the validation media's scores (for the record).
    """
    detector = fit_detector(method, train_embeddings, train_labels)
    val_scores = np.array([media_score(detector, e)[0] for e in val_media_embeddings])
    threshold = float(np.quantile(val_scores, accept, method="higher")) if len(val_scores) else float("inf")
    return TrainingDistribution(detector, threshold, accept, InputProfile.fit(train_stats)), val_scores


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _range(values: list[float]) -> list[float]:
    return [round(float(min(values)), 3), round(float(max(values)), 3)]
