"""`make demo`: generate the synthetic sample set, run the three DAGs with dag.test(), print verdicts.

Runs on embedded defaults: Airflow with SQLite under .airflow/, the embedded MongoDB-wire
server (unless MONGO_URI is set), MLflow with SQLite under .data/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from run_dags import run_dag  # scripts/ is on sys.path when this file runs

from pipeline import tracking
from pipeline.redact import redact
from pipeline.services import airflow_environment, mongo_uri, owner_only, private_folder
from pipeline.settings import PROJECT_ROOT, get_settings
from pipeline.store import ResultStore
from pipeline.synthetic import drop_incoming, make_labelled_set
from pipeline.verdicts import OUTSIDE

DAG_IDS = ("prepare_dataset", "train_detector", "score_incoming")
console = Console()


def main() -> int:
    owner_only()  # the demo's databases, logs and models: readable by their owner only
    settings = get_settings()
    root = private_folder(settings.storage.local_root)
    private_folder(PROJECT_ROOT / ".airflow")
    source, incoming = root / "demo" / "source", Path(settings.storage.incoming_uri.removeprefix("file://"))
    step("1/4 generating the synthetic sample set (clearly synthetic: see README)")
    if not (source / "labels.csv").exists():
        shutil.rmtree(source, ignore_errors=True)
        made = make_labelled_set(source)
        console.print(f"    {made.images} images and {made.videos} videos in {source}")
    dropped = drop_incoming(incoming)
    console.print(f"    dropped {len(dropped)} files into the watched folder {incoming}")
    with mongo_uri(settings.mongo.uri, root / "mongo") as uri:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # keep the demo's output readable
        os.environ.update(
            airflow_environment(
                project_root=PROJECT_ROOT,
                airflow_home=PROJECT_ROOT / ".airflow",
                mongo_uri=uri,
                database=settings.mongo.database,
                conn_id=settings.mongo.airflow_conn_id,
            )
        )
        step("2/4 migrating Airflow's database (.airflow/airflow.db)")
        subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, stdout=subprocess.DEVNULL
        )
        step("3/4 running the DAGs: prepare_dataset -> train_detector -> score_incoming")
        for dag_id, conf in zip(DAG_IDS, ({"source_uri": str(source)}, {}, {}), strict=True):
            started = time.perf_counter()
            state = run_dag(dag_id, conf)
            console.print(
                f"    {dag_id}: [{'green' if state == 'success' else 'red'}]{state}[/] "
                f"in {time.perf_counter() - started:.0f} s"
            )
            if state != "success":
                return 1
        step("4/4 results read back from MongoDB")
        store = ResultStore.from_uri(uri, database=settings.mongo.database)
        print_results(store, settings)
    return 0


def print_results(store: ResultStore, settings) -> None:
    run = store.db["training_runs"].find_one(sort=[("created_at", -1)])
    table = Table(title="Verdicts (MongoDB collection 'verdicts')")
    for column in ("file", "kind", "verdict", "p(fake)", "why", "frames", "model"):
        table.add_column(column)
    verdicts = store.list_verdicts(limit=50)
    for verdict in verdicts:
        probability = verdict.get("probability")
        table.add_row(
            Path(verdict["source_uri"]).name,
            verdict["kind"],
            verdict.get("verdict") or "failed",
            "-" if probability is None else f"{probability:.3f}",
            verdict.get("reason") or "",
            str(verdict.get("frame_count", 0)),
            f"v{verdict['model']['version']}",
        )
    console.print(table)
    scored = [v for v in verdicts if v["status"] == "scored"]
    confident = [v for v in scored if v["verdict"] in ("real", "fake")]
    outside = [v for v in scored if v.get("reason") == OUTSIDE]
    console.print(
        f"Coverage: {len(confident)} of {len(scored)} scored media got a confident verdict; "
        f"{len(outside)} abstained as outside the training distribution."
    )
    if outside:
        example = outside[0]
        console.print(
            f"  e.g. {Path(example['source_uri']).name}: {'; '.join(example['ood']['details'])} "
            f"(the model alone would have said {example['model_verdict']}, P(AI) {example['probability']:.2f})"
        )
    drift = next(iter(store.drift_checks(limit=1)), None)
    if drift:
        console.print(f"Drift check (MongoDB 'drift', after scoring): {drift['summary']}")
    metrics = run["metrics"]
    console.print(
        f"MLflow run [bold]{run['_id']}[/] (model {run['model']['name']} v{run['model']['version']}): "
        f"test accuracy {metrics['accuracy']:.3f}, ROC-AUC {metrics.get('roc_auc', float('nan')):.3f} "
        f"on the synthetic test split; tracking store {redact(tracking.configure(settings))}"
    )
    console.print(
        "Open the UIs with [bold]make up[/] (Airflow http://127.0.0.1:8080, MLflow http://127.0.0.1:5000); "
        "query verdicts with [bold].venv/bin/mediacheck verdicts list[/], read the model card with "
        "[bold].venv/bin/mediacheck card[/]."
    )


def step(message: str) -> None:
    console.rule(f"[bold]{message}")


if __name__ == "__main__":
    sys.exit(main())
