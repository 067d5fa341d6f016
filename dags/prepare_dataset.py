"""
### Prepare a dataset
Ingests labelled media from **source_uri** (class folders such as `REAL/` and `FAKE/`, a
`labels.csv`, or the CSV named by **labels_csv**), extracts frames with FFmpeg (one mapped task
per video), resizes them, removes duplicates, quarantines bad files with a reason, splits
train/val/test by group and balances classes. Writes a Parquet manifest and MongoDB records,
then emits the **mediacheck_dataset** asset, which starts `train_detector`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from pipeline.settings import PROJECT_ROOT, get_settings, trigger_form

DATASET = Asset("mediacheck_dataset")
FORM = ["frames_per_video", "resize_policy", "crop", "balance", "val_fraction", "test_fraction", "seed"]
SOURCE = Param(str(PROJECT_ROOT / ".data" / "demo" / "source"), type="string", minLength=1,
               description="Folder or s3:// URI holding the labelled media.")  # fmt: skip
LABELS = Param(None, type=["null", "string"], description="CSV of file_name,label (names relative to source_uri), "
               "such as Kaggle's train.csv; empty: a labels.csv inside the source, or its class folders.")  # fmt: skip
FORM_PARAMS = {k: Param(**v) for k, v in trigger_form(get_settings(), "prepare", FORM).items()}
PARAMS = {"source_uri": SOURCE, "labels_csv": LABELS, **FORM_PARAMS}


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
    tags=["mediacheck", "prepare"],
    params=PARAMS,
)
def prepare_dataset():
    def settings(params: dict):
        from pipeline.settings import with_overrides

        return with_overrides(get_settings(), "prepare", {k: params[k] for k in FORM})

    @task
    def plan(params: dict | None = None) -> dict:
        from mediacheck_hooks import failing_without_retry

        from pipeline.stages import prepare

        with failing_without_retry():
            return prepare.plan(settings(params), params["source_uri"], labels_csv=params["labels_csv"] or None)

    @task
    def videos_of(work: dict) -> list[dict]:
        return work["videos"]

    @task
    def image_chunks_of(work: dict) -> list[str]:
        return work["image_chunks"]

    def process(items: list[dict], work: dict, params: dict) -> str:
        from mediacheck_hooks import result_store

        from pipeline.stages import prepare

        config = settings(params)
        return prepare.process_batch(config, result_store(config), work["workdir"], items)

    @task(map_index_template="{{ video.uri.split('/')[-1] }}")
    def extract_video(video: dict, work: dict, params: dict | None = None) -> str:
        return process([video], work, params)

    @task
    def process_images(chunk: str, work: dict, params: dict | None = None) -> str:
        from pipeline.stages import prepare

        return process(prepare.load_chunk(chunk), work, params)

    @task(outlets=[DATASET], trigger_rule="none_failed")
    def assemble(work: dict, params: dict | None = None) -> dict:
        from mediacheck_hooks import failing_without_retry, result_store

        from pipeline.stages import prepare

        config = settings(params)
        with failing_without_retry():
            return prepare.assemble(config, result_store(config), work["workdir"], params["source_uri"],
                                    labels_csv=params["labels_csv"] or None)  # fmt: skip

    work = plan()
    videos = extract_video.partial(work=work).expand(video=videos_of(work))
    images = process_images.partial(work=work).expand(chunk=image_chunks_of(work))
    [videos, images] >> assemble(work)


prepare_dataset()
