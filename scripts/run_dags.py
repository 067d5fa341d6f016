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


def run_dag(dag_id: str, conf: dict) -> str:
    """Parse one DAG file and run it in-process; return the final state."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    if bag.import_errors:
        raise RuntimeError(f"{dag_id} failed to import: {bag.import_errors}")
    return str(bag.get_dag(dag_id).test(run_conf=conf).state)


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
