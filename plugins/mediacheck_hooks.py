"""Airflow-side glue: the pipeline's store over Airflow's MongoDB connection, secrets masked in task logs,
and input errors failing a task without retries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.store import ResultStore


def mask_configured_secrets() -> None:
    """Have Airflow print ``***`` for every configured secret in this task's log (and its supervisor's).

    Airflow masks the connections it hands out, but not a password inside ``MLFLOW_TRACKING_URI``
    or ``MONGO_URI``, which libraries echo in their messages (MLflow's errors and run links).
    """
    from airflow.sdk.log import mask_secret

    from pipeline.redact import configured_secrets
    from pipeline.settings import get_settings

    for secret in configured_secrets(get_settings()):
        mask_secret(secret)


class SecretMasking:
    """Listener: masks the configured secrets in each task process before the task's code runs."""

    @hookimpl
    def on_task_instance_running(self, previous_state, task_instance) -> None:
        mask_configured_secrets()


class MediacheckHooksPlugin(AirflowPlugin):
    name = "mediacheck_hooks"
    listeners = [SecretMasking()]


def result_store(settings: Settings) -> ResultStore:
    """The pipeline's MongoDB store over the client of Airflow's ``MongoHook``."""
    from airflow.providers.mongo.hooks.mongo import MongoHook

    from pipeline.store import ResultStore

    hook = MongoHook(mongo_conn_id=settings.mongo.airflow_conn_id)
    return ResultStore(hook.get_conn(), database=settings.mongo.database)


@contextmanager
def failing_without_retry() -> Iterator[None]:
    """Fail the task at once on an input or settings error: a retry cannot change the input, only delay the message."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.prepare.sources import PrepareError
    from pipeline.settings import SettingsError

    try:
        yield
    except (PrepareError, SettingsError) as error:
        raise AirflowFailException(str(error)) from error
