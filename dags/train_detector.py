"""
### Train the detector
Runs when a new **mediacheck_dataset** asset arrives (or by hand). Phase 1 trains a
binary head on a frozen ImageNet backbone; phase 2 unfreezes the top backbone blocks
(BatchNorm stays frozen) at a low learning rate. The threshold, temperature and verdict
bands (each with its own error budget) are fitted on validation, and so is the threshold of
the out-of-distribution check, from embeddings of the training frames; metrics and plots come
from the test split. Everything is logged to MLflow with a model card, the model is
registered, and the `champion` alias moves only if the new version beats the champion on the
same test split. Emits **mediacheck_model**.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from pipeline.settings import get_settings, trigger_form

DATASET, MODEL = Asset("mediacheck_dataset"), Asset("mediacheck_model")
FORM = [
    "backbone",
    "weights",
    "image_size",
    "batch_size",
    "head_epochs",
    "fine_tune_epochs",
    "unfreeze_blocks",
    "head_learning_rate",
    "fine_tune_learning_rate",
    "fine_tune_schedule",
    "augmentation",
    "test_time_flip",
    "weight_averaging",
    "average_last_epochs",
    "label_smoothing",
    "max_fpr_real",
    "max_fnr_fake",
    "ood_method",
    "ood_accept",
]
DATASET_ID = Param("", type="string", description="Dataset version to train on; empty: the latest.")

PARAMS = {"dataset_id": DATASET_ID, **{k: Param(**v) for k, v in trigger_form(get_settings(), "model", FORM).items()}}


@dag(
    schedule=[DATASET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    doc_md=__doc__,
    tags=["mediacheck", "train"],
    params=PARAMS,
)
def train_detector():
    @task(outlets=[MODEL], queue=get_settings().model.queue)
    def train(params: dict | None = None) -> dict:
        from mediacheck_hooks import failing_without_retry, result_store

        from pipeline.settings import with_overrides
        from pipeline.stages import train as stage

        settings = with_overrides(get_settings(), "model", {k: params[k] for k in FORM})
        with failing_without_retry():
            document = stage.run(settings, result_store(settings), dataset_id=params["dataset_id"] or None)
        return {k: document[k] for k in ("_id", "model", "dataset_id", "metrics", "promoted", "promotion_rule")}

    train()


train_detector()
