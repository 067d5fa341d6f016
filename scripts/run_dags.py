"""Run DAGs in order with ``dag.test()``: ``run_dags.py DAG_ID CONF_JSON [DAG_ID CONF_JSON ...]``.

The Airflow environment (AIRFLOW_HOME, DAGs folder, connections) must already be set and
the metadata database migrated. Prints one line per DAG; exits 1 at the first failure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DAGS_FOLDER = Path(__file__).resolve().parent.parent / "dags"


def run_dag(dag_id: str, conf: dict, dags_folder: Path = DAGS_FOLDER) -> str:
    """Parse one DAG file and run it in-process; return the final state.

    The run takes the place of the run the scheduler would create for asset events already
    queued for this DAG (an upstream DAG just ran in-process and emitted them), so it consumes
    them as the scheduler would: left queued, they would start that DAG again at the next
    `make up` (a second training, and a new champion, after `make demo`).
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder / f"{dag_id}.py"))
    if bag.import_errors:
        raise RuntimeError(f"{dag_id} failed to import: {bag.import_errors}")
    consume_queued_asset_events(dag_id)
    return str(bag.get_dag(dag_id).test(run_conf=conf).state)


def consume_queued_asset_events(dag_id: str) -> int:
    """Drop the asset events queued to trigger ``dag_id`` (Airflow's asset_dag_run_queue); return how many."""
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        return session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)).rowcount


def main(arguments: list[str]) -> int:
    for dag_id, conf in zip(arguments[::2], arguments[1::2], strict=True):
        started = time.perf_counter()
        state = run_dag(dag_id, json.loads(conf))
        print(f"DAG {dag_id}: {state} in {time.perf_counter() - started:.0f} s", flush=True)
        if state != "success":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
