"""The Airflow glue in plugins/mediacheck_hooks.py (plugins/ is on Airflow's path, not the package's)."""

import sys

import pytest
from airflow.sdk.exceptions import AirflowFailException

from pipeline.prepare.sources import PrepareError
from pipeline.settings import PROJECT_ROOT, SettingsError

sys.path.insert(0, str(PROJECT_ROOT / "plugins"))
from mediacheck_hooks import failing_without_retry  # noqa: E402


@pytest.mark.parametrize("error", [PrepareError("test has no fake media: add some"), SettingsError("bad value")])
def test_input_errors_fail_the_task_without_retry_and_keep_their_message(error):
    with pytest.raises(AirflowFailException, match=str(error)) as raised, failing_without_retry():
        raise error
    assert raised.value.__cause__ is error


def test_other_errors_keep_airflow_retries():
    with pytest.raises(ConnectionError), failing_without_retry():
        raise ConnectionError("MongoDB did not answer")
