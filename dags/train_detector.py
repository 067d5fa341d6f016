"""
### Train the detector
Runs when a new **mediacheck_dataset** asset arrives (or by hand). Phase 1 trains a
binary head on a frozen ImageNet backbone; phase 2 unfreezes the top backbone blocks
(BatchNorm stays frozen) at a low learning rate. The threshold, temperature and verdict
bands are fitted on validation; metrics and plots come from the test split. Everything is
logged to MLflow, the model is registered, and the `champion` alias moves only if the new
version beats the champion on the same test split. Emits **mediacheck_model**.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task

DATASET, MODEL = Asset("mediacheck_dataset"), Asset("mediacheck_model")


@dag(schedule=[DATASET], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, doc_md=__doc__,
     tags=["mediacheck", "train"], params={
         "dataset_id": Param("", type="string", description="Dataset version to train on; empty: the latest."),
         "backbone": Param(None, type=["null", "string"], enum=[None, "efficientnet_b0", "efficientnet_lite0"],
                           description="ImageNet backbone (efficientnet_lite0 works offline)."),
         "image_size": Param(None, type=["null", "integer"], minimum=32, description="Backbone input size."),
         "batch_size": Param(None, type=["null", "integer"], minimum=1, description="Batch size."),
         "head_epochs": Param(None, type=["null", "integer"], minimum=1, description="Phase 1 epochs."),
         "fine_tune_epochs": Param(None, type=["null", "integer"], minimum=0, description="Phase 2 epochs."),
         "unfreeze_blocks": Param(None, type=["null", "integer"], minimum=0, description="Top blocks trained in phase 2."),
         "head_learning_rate": Param(None, type=["null", "number"], description="Phase 1 learning rate."),
         "fine_tune_learning_rate": Param(None, type=["null", "number"], description="Phase 2 learning rate."),
     })
def train_detector():
    @task(outlets=[MODEL])
    def train(params: dict | None = None) -> dict:
        from mediacheck_hooks import result_store

        from pipeline.settings import get_settings, with_overrides
        from pipeline.stages import train as stage

        overrides = {k: v for k, v in params.items() if k != "dataset_id"}
        settings = with_overrides(get_settings(), "model", overrides)
        document = stage.run(settings, result_store(settings), dataset_id=params["dataset_id"] or None)
        return {k: document[k] for k in ("_id", "model", "dataset_id", "metrics", "promoted", "promotion_rule")}

    train()


train_detector()
