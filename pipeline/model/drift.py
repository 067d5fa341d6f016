"""Drift: do the media being scored still look like the media the model was trained on?

A model bundle keeps a sample of its training media's statistics: what went in (short side,
format, frame rate, duration, bits per pixel, brightness) and what came out (P(AI) of its
held-out test media). A check pools the media the model scored most recently and compares each
statistic with that reference, two ways: the population stability index (PSI, over the
reference's deciles or its format shares) says how large the shift is, a two-sample test
(Kolmogorov-Smirnov for numbers, chi-squared for formats) whether it is more than chance. A
statistic has drifted only when both say so: a large PSI on a handful of media is noise, and a
significant test on a tiny shift over thousands of media is not worth an alarm.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from pipeline.media.stats import MediaStats
from pipeline.settings import DriftSettings

# Statistic -> the kind of media it describes (None: every medium).
NUMERIC: dict[str, str | None] = {
    "probability": None,
    "short_side": None,
    "bits_per_pixel": None,
    "brightness": None,
    "fps": "video",
    "duration_s": "video",
}
FORMAT = "format"  # "image/jpeg", "video/h264": the kind and its codec, compared as shares
BINS = 10
EMPTY_SHARE = 1e-4  # what an empty bin counts as, so a format absent on one side weighs heavily but finitely
REFERENCE_FILE = "drift_reference.json"


@dataclass(frozen=True)
class MediaProfile:
    """One media item's drift statistics (None where not measured)."""

    kind: str
    codec: str
    short_side: int
    bits_per_pixel: float
    brightness: float | None = None
    fps: float | None = None
    duration_s: float | None = None
    probability: float | None = None

    @classmethod
    def from_stats(
        cls, stats: MediaStats, *, brightness: float | None, probability: float | None = None
    ) -> MediaProfile:
        video = stats.kind == "video"
        return cls(stats.kind, stats.codec, stats.short_side, stats.bits_per_pixel, brightness,
                   stats.fps if video else None, stats.duration_s if video else None, probability)  # fmt: skip

    @classmethod
    def from_verdict(cls, document: dict[str, Any]) -> MediaProfile:
        """From a stored verdict: its ``input`` statistics and P(AI)."""
        seen = dict(document["input"])
        brightness = seen.pop("brightness", None)  # verdicts from before drift monitoring lack it
        return cls.from_stats(MediaStats(**seen), brightness=brightness, probability=document.get("probability"))

    def value(self, statistic: str) -> float | str | None:
        if statistic == FORMAT:
            return f"{self.kind}/{self.codec}"
        applies_to = NUMERIC[statistic]
        if applies_to is not None and applies_to != self.kind:
            return None
        value = getattr(self, statistic)
        return None if value is None or np.isnan(value) else float(value)


@dataclass
class DriftReference:
    """The training media's statistics, as value samples per statistic."""

    values: dict[str, list]

    @classmethod
    def fit(
        cls, training: Sequence[MediaProfile], test_probabilities: Sequence[float], *, limit: int, seed: int
    ) -> DriftReference:
        """Inputs from (a seeded sample of at most ``limit``) training media; P(AI) from the held-out test media,
        which the model scored as it scores new media (its training media it has learnt)."""
        rng = np.random.default_rng(seed)
        if len(training) > limit:
            training = [training[i] for i in sorted(rng.choice(len(training), limit, replace=False))]
        values = {
            name: _present(p.value(name) for p in training) for name in (*NUMERIC, FORMAT) if name != "probability"
        }
        probabilities = [float(p) for p in test_probabilities if not np.isnan(p)]
        if len(probabilities) > limit:
            probabilities = rng.choice(probabilities, limit, replace=False).tolist()
        return cls({"probability": probabilities, **values})

    def save(self, folder: Path) -> None:
        (folder / REFERENCE_FILE).write_text(json.dumps(self.values))

    @classmethod
    def load(cls, folder: Path) -> DriftReference | None:
        """The bundle's reference; None for a bundle saved before drift monitoring."""
        path = folder / REFERENCE_FILE
        return cls(json.loads(path.read_text())) if path.exists() else None


@dataclass(frozen=True)
class StatisticDrift:
    """How one statistic of the window compares with the training data's."""

    statistic: str
    reference_n: int
    window_n: int
    psi: float | None = None
    test: str | None = None  # "ks" or "chi2"
    p_value: float | None = None
    drifted: bool = False
    reference: dict = field(default_factory=dict)  # numbers: median and 5-95% range; formats: shares
    window: dict = field(default_factory=dict)
    note: str | None = None  # why it was not compared

    def movement(self) -> str:
        """The training and recent values in words: medians, or format shares."""
        if self.statistic == FORMAT:
            return f"training {_shares(self.reference)}; now {_shares(self.window)}"
        return f"training median {self.reference['median']:.3g}, now {self.window['median']:.3g}"

    def describe(self) -> str:
        """One line: what moved, by how much."""
        if self.note:
            return f"{self.statistic}: {self.note}"
        return f"{self.statistic}: PSI {self.psi:.2f}, {self.test} p={self.p_value:.2g} ({self.movement()})"


def compare(reference: DriftReference, window: Sequence[MediaProfile], settings: DriftSettings) -> list[StatisticDrift]:
    """Each statistic of ``window`` against ``reference``; see the module docstring for the rule."""
    results = []
    for name in (*NUMERIC, FORMAT):
        seen, now = reference.values.get(name, []), _present(p.value(name) for p in window)
        if min(len(seen), len(now)) < settings.min_media:
            note = f"too few to compare ({len(seen)} training, {len(now)} scored; at least {settings.min_media} each)"
            results.append(StatisticDrift(name, len(seen), len(now), note=note))
            continue
        if name == FORMAT:
            counts = _format_counts(seen, now)
            psi, test, p_value = _psi(*(row / row.sum() for row in counts)), "chi2", _chi2_p(counts)
            summaries = _format_shares(seen), _format_shares(now)
        else:
            psi, test, p_value = _numeric_psi(np.asarray(seen), np.asarray(now)), "ks", stats.ks_2samp(seen, now).pvalue
            summaries = _numeric_summary(seen), _numeric_summary(now)
        drifted = bool(psi > settings.psi_threshold and p_value < settings.significance)
        results.append(StatisticDrift(name, len(seen), len(now), round(psi, 4), test, float(p_value), drifted,
                                      *summaries))  # fmt: skip
    return results


def to_documents(results: list[StatisticDrift]) -> dict[str, dict]:
    return {r.statistic: {k: v for k, v in asdict(r).items() if k != "statistic"} for r in results}


def _present(values) -> list:
    return [v for v in values if v is not None]


def _numeric_psi(seen: np.ndarray, now: np.ndarray) -> float:
    """PSI over the reference's decile bins (fewer where values repeat: bins never split equal values), plus a bin
    below its minimum and one above its maximum, so that a shift beyond a constant reference still shows."""
    edges = np.unique(np.quantile(seen, np.linspace(0, 1, BINS + 1)[1:-1]))
    low, high = seen.min(), seen.max()

    def shares(values: np.ndarray) -> np.ndarray:
        bins = np.searchsorted(edges, values, side="left") + 1
        bins[values < low], bins[values > high] = 0, len(edges) + 2
        return np.bincount(bins, minlength=len(edges) + 3) / len(values)

    return _psi(shares(seen), shares(now))


def _format_counts(seen: list[str], now: list[str]) -> np.ndarray:
    """Two rows (training, recent) of counts per format, over the formats either side has."""
    counts = [Counter(seen), Counter(now)]
    formats = sorted(counts[0].keys() | counts[1].keys())
    return np.array([[count[name] for name in formats] for count in counts])


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.clip(expected, EMPTY_SHARE, None), np.clip(actual, EMPTY_SHARE, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _chi2_p(counts: np.ndarray) -> float:
    if counts.shape[1] < 2:  # one format on both sides: nothing to test
        return 1.0
    return float(stats.chi2_contingency(counts).pvalue)


def _numeric_summary(values: list[float]) -> dict:
    low, median, high = np.quantile(values, [0.05, 0.5, 0.95])
    return {"median": round(float(median), 4), "p05": round(float(low), 4), "p95": round(float(high), 4)}


def _format_shares(values: list[str]) -> dict:
    return {k: round(n / len(values), 3) for k, n in Counter(values).most_common(5)}


def _shares(shares: dict) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
