"""In-process DAG runs (scripts/run_dags.py, used by `make demo`) leave no asset events for the scheduler."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pipeline.services import airflow_environment
from pipeline.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

# The demo's chain in miniature: producer emits an asset that consumer is scheduled on.
DAGS = {
    "producer": """
        @dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
        def producer():
            @task(outlets=[Asset("probe_dataset")])
            def emit():
                return "emitted"

            emit()
    """,
    "consumer": """
        @dag(schedule=[Asset("probe_dataset")], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
        def consumer():
            @task
            def train():
                return "trained"

            train()
    """,
}
# What the scheduler would start after each step, by its own query (DagModel.dags_needing_dagruns).
SEQUENCE = """
import json, sys
from pathlib import Path

import run_dags
from airflow.models.dag import DagModel
from airflow.utils.session import create_session


def scheduler_would_start():
    with create_session() as session:
        return sorted(DagModel.dags_needing_dagruns(session)[1])


folder = Path(sys.argv[1])
report = {"consumer known": run_dags.run_dag("consumer", {}, folder)}  # as after an earlier `make up`
report["producer"] = run_dags.run_dag("producer", {}, folder)
report["queued after producer"] = scheduler_would_start()
report["consumer"] = run_dags.run_dag("consumer", {}, folder)
report["queued at the end"] = scheduler_would_start()
print(json.dumps(report))
"""


def test_in_process_runs_consume_the_asset_events_they_stand_in_for(tmp_path, mongo_uri):
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_id, body in DAGS.items():
        header = "import pendulum\nfrom airflow.sdk import Asset, dag, task\n"
        (dags / f"{dag_id}.py").write_text(header + textwrap.dedent(body) + f"\n{dag_id}()\n")
    env = {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT, airflow_home=tmp_path / "airflow", mongo_uri=mongo_uri, database="probe"
        ),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "PYTHONPATH": str(PROJECT_ROOT / "scripts"),
    }
    airflow = str(PROJECT_ROOT / ".venv" / "bin" / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.run(
        [sys.executable, "-c", SEQUENCE, str(dags)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "consumer known": "success",
        "producer": "success",
        "queued after producer": ["consumer"],  # the event is real: a scheduler starting now would run consumer
        "consumer": "success",
        "queued at the end": [],  # the in-process run consumed it: `make up` replays nothing
    }
