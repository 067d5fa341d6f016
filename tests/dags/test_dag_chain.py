"""A real Airflow run of the chain prepare_dataset -> train_detector -> score_incoming.

The DAGs run with ``dag.test()`` in a subprocess (a fresh Airflow configuration against a
migrated SQLite database), the MongoHook pointing at the session's MongoDB-wire server.
"""

import json
import os
import subprocess
import sys

import mlflow
import pytest

from pipeline import tracking
from pipeline.services import airflow_environment
from pipeline.settings import PROJECT_ROOT
from pipeline.store import DATASETS, DRIFT, INTAKE, MEDIA, TRAINING_RUNS, VERDICTS, ResultStore
from pipeline.synthetic import drop_incoming

pytestmark = pytest.mark.slow


def test_dag_chain_end_to_end(settings, mongo_uri, synthetic_source, tmp_path):
    database = "dag_chain"
    env = {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT, airflow_home=tmp_path / "airflow", mongo_uri=mongo_uri, database=database
        ),
    }
    env["MEDIACHECK_MONGO__DATABASE"] = database
    subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    dropped = drop_incoming(tmp_path / "incoming")
    os.mkfifo(tmp_path / "incoming" / "pipe.mp4")  # poison pills: neither may fail a task
    (tmp_path / "incoming" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "incoming" / "labels.csv").write_text("file,label\n")
    labels = str(synthetic_source.labels_csv)  # inside the source anyway: named here to go through the trigger form
    conf = json.dumps({"source_uri": str(synthetic_source.root), "labels_csv": labels, "frames_per_video": 3})
    run = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "scripts" / "run_dags.py"),
            "prepare_dataset",
            conf,
            "train_detector",
            "{}",
            "score_incoming",
            "{}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert [line.split(":")[1].split()[0] for line in run.stdout.splitlines() if line.startswith("DAG ")] == [
        "success"
    ] * 3

    store = ResultStore.from_uri(mongo_uri, database=database)
    dataset = store.latest_dataset()
    assert dataset["frames_per_video"] == 3  # the trigger-form parameter reached the task
    assert dataset["labels_csv"] == labels  # from plan to assemble
    assert store.count(MEDIA) == dataset["totals"]["kept"] and store.count(DATASETS) == 1
    training = store.db[TRAINING_RUNS].find_one()
    assert training["dataset_id"] == dataset["_id"]
    tracking.configure(settings)  # the same store the DAGs logged to
    run_info = mlflow.get_run(training["_id"])
    assert run_info.data.tags["manifest_hash"] == dataset["manifest_hash"]
    assert tracking.champion(settings).version == training["model"]["version"]
    verdicts = list(store.db[VERDICTS].find())
    assert len(verdicts) == len(dropped)
    assert {v["model"]["run_id"] for v in verdicts} == {training["_id"]}
    assert sum(v["status"] == "scored" for v in verdicts) == len(dropped) - 1  # notes.mp4 is not media
    skipped = {d["_id"].rsplit("/", 1)[-1]: d["reason"] for d in store.db[INTAKE].find({"status": "skipped"})}
    assert skipped == {"pipe.mp4": "not a regular file (a FIFO)", "gone.jpg": "dangling symbolic link"}
    scored = [v for v in verdicts if v["status"] == "scored"]
    assert all(v["ood"]["threshold"] == training["ood"]["threshold"] and v["ood_score"] is not None for v in scored)
    assert all(v["provenance"]["c2pa"]["state"] == "absent" and v["basis"] == "model" for v in scored)
    assert training["card"]["model"]["version"] == training["model"]["version"]
    check = store.db[DRIFT].find_one()  # score_incoming's last task: the champion's window against its training
    assert check["model"] == {**training["model"], "run_id": training["_id"]} and check["window"]["media"] == 7
    assert check["drifted"] is False and all(s["note"].startswith("too few") for s in check["statistics"].values())
    assert check["summary"].endswith("7 scored media: too few to compare with the training data yet")
    assert mlflow.get_run(training["_id"]).data.metrics["drift_window_media"] == 7
