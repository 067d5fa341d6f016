"""Airflow-side glue: hand the Airflow MongoDB connection's client to the pipeline's store."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.store import ResultStore


def result_store(settings: Settings) -> ResultStore:
    """The pipeline's MongoDB store over the client of Airflow's ``MongoHook``."""
    from airflow.providers.mongo.hooks.mongo import MongoHook

    from pipeline.store import ResultStore

    hook = MongoHook(mongo_conn_id=settings.mongo.airflow_conn_id)
    return ResultStore(hook.get_conn(), database=settings.mongo.database)
