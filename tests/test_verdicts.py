"""Verdict precedence (provenance, then abstention, then the bands) and selective metrics."""

import math

from pipeline.media.provenance import Provenance
from pipeline.model.calibration import Calibration
from pipeline.model.ood import OodAssessment
from pipeline.verdicts import BETWEEN, OUTSIDE, decide, selective_metrics

BANDS = Calibration(1.0, 0.5, 0.2, 0.8)
INSIDE = OodAssessment("knn", 0.1, 0.5, [0.1], [])
FAR = OodAssessment("knn", 0.9, 0.5, [0.9], [])
AI_METADATA = Provenance(generator=["EXIF Software names a generator: 'Midjourney'"])


def test_the_model_decides_inside_the_training_distribution():
    assert decide(0.95, BANDS, INSIDE).to_dict() == {
        "verdict": "fake", "basis": "model", "reason": None, "model_verdict": "fake",
    }  # fmt: skip
    assert decide(0.5, BANDS, INSIDE).reason == BETWEEN
    assert decide(0.05, BANDS, None).verdict == "real"  # a model without out-of-distribution checks


def test_outside_the_training_distribution_the_verdict_abstains_and_keeps_the_models_band():
    decision = decide(0.02, BANDS, FAR)
    assert (decision.verdict, decision.reason, decision.model_verdict) == ("uncertain", OUTSIDE, "real")
    by_input = OodAssessment("knn", 0.1, 0.5, [0.1], ["a video: the model was trained on images only"])
    assert decide(0.99, BANDS, by_input).reason == OUTSIDE


def test_provenance_declaring_ai_decides_whatever_the_model_says():
    decision = decide(0.02, BANDS, FAR, AI_METADATA)
    assert (decision.verdict, decision.basis, decision.model_verdict) == ("fake", "provenance", "real")
    assert "Midjourney" in decision.reason
    assert decide(0.02, BANDS, INSIDE, Provenance()).basis == "model"  # no metadata changes nothing
    untrusted_but_plain = Provenance(c2pa={"state": "invalid", "ai_source_types": ["trainedAlgorithmicMedia"]})
    assert decide(0.02, BANDS, INSIDE, untrusted_but_plain).verdict == "real"  # a tampered manifest is no evidence


def test_selective_metrics_count_confident_verdicts_only():
    metrics = selective_metrics([0, 0, 1, 1, 1], ["real", "fake", "fake", "uncertain", "uncertain"])
    assert metrics == {"media": 5, "coverage": 0.6, "confident_accuracy": 2 / 3, "confident_wrong_rate": 0.2}
    none = selective_metrics([0, 1], ["uncertain", "uncertain"])
    assert none["coverage"] == 0 and math.isnan(none["confident_accuracy"]) and none["confident_wrong_rate"] == 0
