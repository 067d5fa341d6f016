"""From a calibrated score and the evidence around it to the verdict users act on.

Precedence: provenance that declares AI generation (see ``pipeline.media.provenance``) makes the
verdict ``fake``; otherwise a media item outside the training distribution is ``uncertain``,
whatever its score; otherwise the score falls in a band. The model's own band is always kept
beside the verdict, so nothing the model said is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # kept light: the Detections view imports this module inside Airflow's API server
    from pipeline.media.provenance import Provenance
    from pipeline.model.calibration import Calibration
    from pipeline.model.ood import OodAssessment

OUTSIDE = "outside the training distribution"
BETWEEN = "between the bands"
CONFIDENT = ("real", "fake")


@dataclass(frozen=True)
class Decision:
    verdict: str  # real, uncertain or fake
    basis: str  # "model", or "provenance" where the file's own metadata decided
    reason: str | None  # why the verdict is uncertain, or the provenance evidence
    model_verdict: str  # the band the model's score alone falls in

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    probability: float, calibration: Calibration, ood: OodAssessment | None, provenance: Provenance | None = None
) -> Decision:
    model_verdict = calibration.verdict(probability)
    if provenance is not None and provenance.declares_ai:
        return Decision("fake", "provenance", "; ".join(provenance.evidence()), model_verdict)
    if ood is not None and ood.outside:
        return Decision("uncertain", "model", OUTSIDE, model_verdict)
    return Decision(model_verdict, "model", BETWEEN if model_verdict == "uncertain" else None, model_verdict)


def selective_metrics(labels: Sequence[int], verdicts: Sequence[str]) -> dict[str, float]:
    """How a set of verdicts on labelled media fared.

    ``coverage``: the share of media with a confident verdict (real or fake);
    ``confident_accuracy``: the share of those that are right (NaN with none);
    ``confident_wrong_rate``: confidently wrong verdicts as a share of all media.
    """
    labels, verdicts = np.asarray(labels), np.asarray(verdicts)
    confident = np.isin(verdicts, CONFIDENT)
    right = confident & (verdicts == np.where(labels == 1, "fake", "real"))
    media = len(labels)
    return {
        "media": media,
        "coverage": float(confident.mean()) if media else float("nan"),
        "confident_accuracy": float(right.sum() / confident.sum()) if confident.any() else float("nan"),
        "confident_wrong_rate": float((confident & ~right).sum() / media) if media else float("nan"),
    }
