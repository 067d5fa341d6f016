"""
### Score incoming media
Lists the watched bucket (`storage.incoming_uri`: a local folder or `s3://`), skips
everything already scored (identity is the content sha256, so renamed or re-dropped files
are linked to their existing verdict), waits for objects still being written (unchanged for
`score.settle_s`), records what cannot be media (FIFOs, dangling links, unreadable files) with
its reason instead of failing, and scores each new object in its own mapped task
with the `champion` model: uniform frames, calibrated frame scores, a video score by the
configured aggregation rule and a three-band verdict (`real`, `uncertain`, `fake`) stored
in MongoDB with per-frame scores and lineage. Media unlike the model's training data get
`uncertain` (outside the training distribution); a valid C2PA manifest or generator metadata
declaring AI generation makes the verdict `fake` (basis: provenance); the evidence frames of
`fake` and `uncertain` verdicts keep Grad-CAM overlays. Runs every minute, so media dropped into the
bucket get verdicts with no manual trigger, and whenever a new model is registered.
Originals are kept (and recorded) or moved into `.processed/` / `.failed/` per
`score.after_scoring`; nothing is deleted.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

MODEL = Asset("mediacheck_model")
# Poll the bucket every minute (a listing; known objects are skipped without reading them)
# and also run as soon as a new model is registered.
EVERY_MINUTE_OR_NEW_MODEL = AssetOrTimeSchedule(
    assets=[MODEL], timetable=CronTriggerTimetable("* * * * *", timezone="UTC")
)


@dag(
    schedule=EVERY_MINUTE_OR_NEW_MODEL,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
    tags=["mediacheck", "score"],
    max_active_runs=1,
)
def score_incoming():
    @task
    def list_new() -> list[str]:
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings
        from pipeline.stages import score

        settings = get_settings()
        return score.survey(settings, result_store(settings)).new  # what cannot be media is logged and recorded

    @task(map_index_template="{{ uri.split('/')[-1] }}")
    def score_one(uri: str) -> dict:
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings
        from pipeline.stages import score

        settings = get_settings()
        return score.score_uri(uri, score.load_champion(settings), settings, result_store(settings))

    score_one.expand(uri=list_new())


score_incoming()
