"""
### Score incoming media
Lists the watched bucket (`storage.incoming_uri`: a local folder or `s3://`), skips
everything already scored (identity is the content sha256, so renamed or re-dropped files
are linked to their existing verdict), waits for objects still being written (unchanged for
`score.settle_s`), records what cannot be media (FIFOs, dangling links, unreadable files) with
its reason instead of failing, and scores the new objects in mapped tasks of
`score.objects_per_task` each (one model load per task; a bad object fails only itself)
with the `champion` model: uniform frames, calibrated frame scores, a video score by the
configured aggregation rule and a three-band verdict (`real`, `uncertain`, `fake`) stored
in MongoDB with per-frame scores and lineage. Media unlike the model's training data get
`uncertain` (outside the training distribution); a valid C2PA manifest or generator metadata
declaring AI generation makes the verdict `fake` (basis: provenance); the evidence frames of
`fake` and `uncertain` verdicts keep Grad-CAM overlays. Runs as soon as new media settle in
the bucket (a watch in the triggerer), every minute anyway, and whenever a new model is registered.
Originals are kept (and recorded) or moved into `.processed/` / `.failed/` per
`score.after_scoring`; nothing is deleted. Last, `check_drift` compares the champion's recent
media with its training data (stored in MongoDB `drift` and MLflow; a warning when drifted).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, dag, task
from mediacheck_triggers import NewMediaTrigger

from pipeline.settings import get_settings

MODEL = Asset("mediacheck_model")
_settings = get_settings()
# Run as soon as the triggerer sees new media settle in the bucket, or a new model is registered;
# and poll every minute anyway (a listing; known objects are skipped without reading them).
NEW_MEDIA = Asset(
    "mediacheck_new_media",
    watchers=[
        AssetWatcher(
            name="new_media",
            trigger=NewMediaTrigger(
                _settings.storage.incoming_uri, _settings.score.settle_s, _settings.score.watch_interval_s
            ),
        )
    ],
)
EVERY_MINUTE_OR_NEW_MEDIA_OR_MODEL = AssetOrTimeSchedule(
    assets=MODEL | NEW_MEDIA, timetable=CronTriggerTimetable("* * * * *", timezone="UTC")
)


@dag(
    schedule=EVERY_MINUTE_OR_NEW_MEDIA_OR_MODEL,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
    tags=["mediacheck", "score"],
    max_active_runs=1,
)
def score_incoming():
    @task
    def list_new() -> list[list[str]]:
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings
        from pipeline.stages import score

        settings = get_settings()
        found = score.survey(settings, result_store(settings))  # what cannot be media is logged and recorded
        return score.in_chunks(found.new, settings.score.objects_per_task)

    @task(map_index_template="{{ uris[0].split('/')[-1] }} (+{{ uris | length - 1 }})")
    def score_chunk(uris: list[str]) -> list[dict]:
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings
        from pipeline.stages import score

        settings = get_settings()
        return score.score_chunk(uris, settings, result_store(settings))

    @task(trigger_rule="all_done")  # a failed chunk still leaves verdicts worth checking
    def check_drift(chunks: list[list[str]] | None) -> dict | None:
        if not chunks:
            return None  # nothing new scored: the last check still holds (the minute poll costs no model load)
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings
        from pipeline.stages import drift

        settings = get_settings()
        found = drift.check(settings, result_store(settings))  # past the threshold: a warning in this log
        return found and {"drifted": [s.statistic for s in found.drifted], "summary": found.summary()}

    chunks = list_new()
    score_chunk.expand(uris=chunks) >> check_drift(chunks)


score_incoming()
