"""Drift check: the media the champion scored most recently against the media it was trained on.

Run after every scoring run (``score_incoming``'s last task) and by ``mediacheck drift``. The
check goes to MongoDB ``drift`` (once per model and window: an unchanged window is not stored
again) and, when new, to MLflow as metrics of the run that trained the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline import tracking
from pipeline.model.drift import MediaProfile, StatisticDrift, compare, to_documents
from pipeline.settings import Settings
from pipeline.stages.score import LoadedModel, NoModelError, load_champion
from pipeline.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftCheck:
    """One check of one model's recent media."""

    model: tracking.ModelRef
    statistics: list[StatisticDrift]
    content_ids: list[str]
    first_scored_at: datetime
    last_scored_at: datetime

    @property
    def drifted(self) -> list[StatisticDrift]:
        return [s for s in self.statistics if s.drifted]

    def summary(self) -> str:
        head = f"model {self.model.name} v{self.model.version}, last {len(self.content_ids)} scored media"
        compared = [s.statistic for s in self.statistics if s.note is None]
        if not compared:
            return f"{head}: too few to compare with the training data yet"
        if not self.drifted:
            return f"{head}: no drift from the training data in {', '.join(compared)}"
        return f"{head}: drifted from the training data in " + "; ".join(s.describe() for s in self.drifted)

    def document(self, settings: Settings) -> dict[str, Any]:
        return {
            "model": {"name": self.model.name, "version": self.model.version, "run_id": self.model.run_id},
            "window": {
                "media": len(self.content_ids),
                "size": settings.drift.window_media,
                "first_scored_at": self.first_scored_at,
                "last_scored_at": self.last_scored_at,
                "content_ids": self.content_ids,
            },
            "drifted": bool(self.drifted),
            "drifted_statistics": [s.statistic for s in self.drifted],
            "summary": self.summary(),
            "statistics": to_documents(self.statistics),
            "rule": settings.drift.model_dump(exclude={"window_media", "reference_media"}),
        }

    def metrics(self) -> dict[str, float]:
        compared = {f"drift_psi_{s.statistic}": s.psi for s in self.statistics if s.psi is not None}
        return {**compared, "drift_detected": float(bool(self.drifted)), "drift_window_media": len(self.content_ids)}


def check(settings: Settings, store: ResultStore, *, loaded: LoadedModel | None = None) -> DriftCheck | None:
    """Compare the champion's recent media with its training data; None when there is nothing to compare.

    ``loaded``: the champion, where the caller has just scored with it (else it is loaded here).
    """
    try:
        loaded = loaded or load_champion(settings)
    except NoModelError:
        log.info("drift: no champion model yet")
        return None
    ref, reference = loaded.ref, loaded.bundle.drift_reference
    if reference is None:
        log.info("drift: model %s v%s predates drift monitoring: no reference to compare with", ref.name, ref.version)
        return None
    recent = store.recent_scored(model_name=ref.name, model_version=ref.version, limit=settings.drift.window_media)
    if not recent:
        log.info("drift: model %s v%s has scored nothing yet", ref.name, ref.version)
        return None
    result = DriftCheck(
        ref,
        compare(reference, [MediaProfile.from_verdict(v) for v in recent], settings.drift),
        [v["_id"] for v in recent],
        recent[-1]["scored_at"],
        recent[0]["scored_at"],
    )
    if store.record_drift(result.document(settings)):
        step = store.count_drift_checks(model_name=ref.name, model_version=ref.version)
        tracking.log_run_metrics(ref.run_id, result.metrics(), step=step)
    if result.drifted:
        log.warning("drift: %s", result.summary())
    else:
        log.info("drift: %s", result.summary())
    return result
