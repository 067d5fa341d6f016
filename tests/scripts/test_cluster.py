"""`make cluster` (scripts/cluster.py): compose's topology run natively, the two kept one configuration."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cluster
import pytest
import stack

from pipeline.services import free_port
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.store import VERDICTS, ResultStore
from pipeline.synthetic import drop_incoming
from tests.scripts.test_stack import STACK, kill_leftovers, marked, request, wait_for

PORTS = cluster.Ports(postgres=15432, redis=16379, mlflow=15000, apiserver=18080, scheduler_health=18974)
CREDENTIALS = {
    "POSTGRES_PASSWORD": "pg-s3cret",
    "REDIS_PASSWORD": "redis-s3cret",
    "AIRFLOW_FERNET_KEY": "fernet-s3cret",
    "AIRFLOW_API_SECRET_KEY": "api-s3cret",
    "AIRFLOW_JWT_SECRET": "jwt-s3cret",
    "AIRFLOW_ADMIN_PASSWORD": "admin-s3cret",
}
FINISHED = ("success", "failed")


def planned(settings, *, workers: int = 2, mongo_uri: str | None = None) -> dict[str, stack.Component]:
    listed = cluster.components(
        settings=settings, ports=PORTS, credentials=CREDENTIALS, airflow_home=Path("/tmp/airflow"),
        workers=workers, mongo_uri=mongo_uri,
    )  # fmt: skip
    return {component.name: component for component in listed}


def test_every_compose_service_is_started_natively_or_named_with_a_reason(settings):
    services = set(cluster.compose()["services"])
    started = {name.rsplit("-", 1)[0] if name.startswith(f"{cluster.WORKER}-") else name for name in planned(settings)}
    assert started | set(cluster.NOT_STARTED) == services
    assert not started & set(cluster.NOT_STARTED)
    assert all(cluster.NOT_STARTED.values())


def test_airflow_roles_run_compose_commands_with_compose_environment(settings):
    spec = cluster.compose()
    components = planned(settings)
    for role in (*cluster.AIRFLOW_ROLES, f"{cluster.WORKER}-1", f"{cluster.WORKER}-2"):
        compose_command = spec["services"][role.removesuffix("-1").removesuffix("-2")]["command"]
        command = components[role].command
        assert [Path(command[0]).name, *command[1 : len(compose_command)]] == compose_command
        environment = components[role].env
        for name, value in spec["x-airflow-common"]["environment"].items():
            if name in cluster.REPLACED:
                assert environment[name] != value, name
            elif name not in cluster.FROM_CALLER:
                assert environment[name] == cluster.native_value(value, PORTS, CREDENTIALS), name
    assert components["airflow-worker-1"].env["MEDIACHECK_WORKER_NAME"] == "worker1"
    worker_ports = {components[f"airflow-worker-{i}"].env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] for i in (1, 2)}
    assert len(worker_ports) == 2  # two log servers on one machine
    assert components["airflow-init"].once and components["airflow-init"].command[1:] == ["db", "migrate"]


def test_compose_hosts_become_local_ports_and_secrets_stay_off_command_lines(settings):
    components = planned(settings)
    environment = components["airflow-scheduler"].env
    assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:pg-s3cret@127.0.0.1:15432/airflow"
    )
    assert environment["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis-s3cret@127.0.0.1:16379/0"
    assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert environment["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    mongo_port = components["mongo"].health.rsplit(":", 1)[1]  # the embedded server, its URI where the CLI looks
    assert environment["MONGO_URI"] == f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true"
    assert (settings.storage.local_root / "mongo.uri").read_text() == environment["MONGO_URI"]
    # the database named like a service keeps its name: only a URL's host is a service
    assert components["mlflow"].env["MLFLOW_BACKEND_STORE_URI"] == "postgresql://airflow:pg-s3cret@127.0.0.1:15432/mlflow"
    assert cluster.native_value("https://example.org/mlflow", PORTS, CREDENTIALS) == "https://example.org/mlflow"
    assert components["airflow-apiserver"].health == "http://127.0.0.1:18080/api/v2/version"  # compose's checks
    assert components["airflow-scheduler"].health == "http://127.0.0.1:18974/health"
    assert components["mlflow"].health == "http://127.0.0.1:15000/health"
    assert components["postgres"].health == "tcp://127.0.0.1:15432"
    command_lines = " ".join(" ".join(component.command) for component in components.values())
    assert not [secret for secret in CREDENTIALS.values() if secret in command_lines]
    redis_config = Path(components["redis"].command[1])
    assert "requirepass redis-s3cret" in redis_config.read_text() and redis_config.stat().st_mode & 0o077 == 0


def test_a_configured_mongo_uri_replaces_the_embedded_server(settings):
    uri = "mongodb://db.example.org:27017/?replicaSet=rs0"
    components = planned(settings, mongo_uri=uri)
    assert "mongo" not in components
    assert components["airflow-triggerer"].env["MONGO_URI"] == uri


def test_the_init_script_becomes_single_user_statements():
    assert cluster.sql_statements((PROJECT_ROOT / "docker" / "postgres-init.sql").read_text()) == [
        "CREATE DATABASE mlflow OWNER airflow;"
    ]
    assert cluster.sql_statements("-- note\nCREATE TABLE a (x int); -- why\nDROP TABLE b;") == [
        "CREATE TABLE a (x int);",
        "DROP TABLE b;",
    ]


def airflow_api(port: int, password: str):
    """A small client of Airflow's REST API: (get, post, patch), each returning the decoded answer."""
    api = f"http://127.0.0.1:{port}"
    token = request(f"{api}/auth/token", method="POST", body={"username": "admin", "password": password})[1]
    headers = {"token": token["access_token"]}

    def call(method: str):
        return lambda path, body=None: request(f"{api}/api/v2/{path}", method=method, body=body, **headers)[1]

    return call("GET"), call("POST"), call("PATCH")


def dag_runs(get, dag_id: str) -> list[dict]:
    return (get(f"dags/{dag_id}/dagRuns?order_by=start_date&limit=100") or {}).get("dag_runs", [])


def task_instances(get, dag_id: str, run_id: str) -> list[dict]:
    return get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_production_topology_trains_and_scores_across_two_celery_workers(settings, synthetic_source, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    """PostgreSQL, Redis, MLflow's server, every Airflow role and two Celery workers; prepare -> train -> score
    through the scheduler, then a drop: one verdict per object, both workers scored, MLflow's champion scored."""
    if not shutil.which("redis-server") or not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("Debian's postgresql and redis-server are needed: apt-get install postgresql redis-server")
    api_port, mlflow_port = free_port(), free_port()
    for name, value in {"AIRFLOW__API__PORT": api_port, "MEDIACHECK_MLFLOW__UI_URL": f"http://127.0.0.1:{mlflow_port}",
                        "MEDIACHECK_SCORE__OBJECTS_PER_TASK": 2, "MEDIACHECK_SCORE__SETTLE_S": 1}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    settings = load_settings()
    incoming = Path(settings.storage.incoming_uri.removeprefix("file://"))
    incoming.mkdir(parents=True)
    stack_id = None
    try:
        up = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "cluster.py"), "up",
                             "--airflow-home", str(tmp_path / "airflow")],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
        stack_id = json.loads((settings.storage.local_root / "stack" / "pids.json").read_text())["id"]
        assert up.returncode == 0, up.stdout + up.stderr
        password = json.loads((settings.storage.local_root / "stack" / "airflow_passwords.json").read_text())["admin"]
        get, post, _ = airflow_api(api_port, password)
        assert {"scheduler", "triggerer", "dag_processor"} <= set(get("monitor/health"))
        wait_for(lambda: get("dags/prepare_dataset") and get("dags/score_incoming"), 180, "the DAGs parsed")

        post("dags/prepare_dataset/dagRuns", {"logical_date": None, "conf": {"source_uri": str(synthetic_source.root)}})
        # the dataset asset starts training: the scheduler's chain, not dag.test()
        for dag_id in ("prepare_dataset", "train_detector"):
            runs = wait_for(lambda: [r for r in dag_runs(get, dag_id) if r["state"] in FINISHED], 600, dag_id)  # noqa: B023
            assert runs[0]["state"] == "success", dag_id

        media = [path for seed in range(2) for path in drop_incoming(tmp_path / "drops" / str(seed), seed=seed)][:10]
        for index, path in enumerate(media):
            shutil.copyfile(path, incoming / f"{index:02d}-{path.name}")
        contents = {hashlib.sha256(path.read_bytes()).hexdigest() for path in media}
        mongo_uri = (settings.storage.local_root / "mongo.uri").read_text()
        store = ResultStore.from_uri(mongo_uri, database=settings.mongo.database)
        wait_for(lambda: {v["_id"] for v in store.db[VERDICTS].find({}, {"_id": 1})} >= contents, 600, "the verdicts")
        wait_for(lambda: all(r["state"] in FINISHED for r in dag_runs(get, "score_incoming")), 300, "scoring to end")

        verdicts = list(store.db[VERDICTS].find())
        assert sorted(v["_id"] for v in verdicts) == sorted(contents)  # exactly one verdict per content
        scoring_hosts = {
            ti["hostname"]
            for r in dag_runs(get, "score_incoming")
            for ti in task_instances(get, "score_incoming", r["dag_run_id"])
            if ti["task_id"] == "score_chunk" and ti["state"] == "success"
        }
        assert {host.split(".", 1)[0] for host in scoring_hosts} == {"worker1", "worker2"}, scoring_hosts

        from mlflow import MlflowClient

        champion = MlflowClient(f"http://127.0.0.1:{mlflow_port}").get_model_version_by_alias(
            settings.mlflow.registered_model, "champion"
        )
        assert {(v["model"]["version"], v["model"]["run_id"]) for v in verdicts} == {
            (champion.version, champion.run_id)
        }
    finally:
        down = subprocess.run([*STACK, "down"], capture_output=True, text=True, timeout=180)
        if stack_id:
            kill_leftovers(stack_id)
    assert down.returncode == 0, down.stdout + down.stderr
    assert marked(stack_id) == []
