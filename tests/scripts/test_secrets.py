"""Secrets in every URI and variable, through a real training and scoring: none of them is written anywhere."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote_plus, urlsplit

import pytest
import stack
from bson import json_util
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from pymongo import MongoClient

from pipeline.services import free_port
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.store import ResultStore
from pipeline.synthetic import drop_incoming
from pipeline.web.app import create_app
from tests.scripts.test_stack import kill_leftovers, launch, wait_for
from tests.test_services import PASSWORD, mongo_with_login, with_login

CLI = [str(Path(sys.executable).parent / "mediacheck")]
AWS_SECRET = "aws-s3cr3t/key+value"
DAGSHUB_TOKEN = "dagshub-t0ken-never-used"


def mlflow_server(settings, port: int) -> tuple[str, str]:
    """The MLflow server `make up` starts (basic-auth), on ``port``; its stack id and admin password."""
    command, environment, credentials_file = stack.mlflow_ui(settings, stack.state_dir())
    stack_id = launch("mlflow", command, settings, environment)["id"]
    password = json.loads(credentials_file.read_text())[stack.ADMIN]

    def answering() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
            return True
        except OSError:
            return False

    wait_for(answering, 120, "the MLflow server")
    return stack_id, password


def cli(*arguments: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *arguments], env=env, capture_output=True, text=True, timeout=600)


def everything_in_mongo(uri: str, database: str) -> str:
    with MongoClient(uri) as client:
        db = client[database]
        return "\n".join(json_util.dumps(list(db[name].find())) for name in db.list_collection_names())


def everything_in_mlflow(client: MlflowClient, folder: Path) -> str:
    """Every experiment, run (params, tags, metrics), text artifact, registered model and version."""
    texts = []
    for experiment in client.search_experiments():
        texts.append(repr(experiment))
        for run in client.search_runs([experiment.experiment_id]):
            texts.append(repr(run.data.params) + repr(run.data.tags) + repr(run.data.metrics) + repr(run.info))
            local = Path(client.download_artifacts(run.info.run_id, "", str(folder / run.info.run_id)))
            texts += [p.read_text(errors="replace") for p in local.rglob("*") if p.suffix in {".json", ".md", ".yaml"}]
    for model in client.search_registered_models():
        texts.append(repr(model))
        texts += [repr(v) for v in client.search_model_versions(f"name='{model.name}'")]
    return "\n".join(texts)


@pytest.mark.slow
def test_no_secret_is_written_to_documents_params_logs_errors_or_the_view(
    settings, synthetic_source, s3_bucket, tmp_path, monkeypatch
):
    port = free_port()
    monkeypatch.setenv("MEDIACHECK_MLFLOW__UI_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", DAGSHUB_TOKEN)  # set, but no dagshub_repo: DagsHub stays off
    incoming = f"s3://{s3_bucket.name}/incoming"
    monkeypatch.setenv("MEDIACHECK_STORAGE__INCOMING_URI", incoming)
    stack_id, mlflow_password = mlflow_server(load_settings(), port)
    with mongo_with_login(tmp_path / "mongo") as server:
        try:
            mongo = with_login(server)
            tracking = f"http://{stack.ADMIN}:{quote_plus(mlflow_password)}@127.0.0.1:{port}"
            env = {**os.environ, "MONGO_URI": mongo, "MLFLOW_TRACKING_URI": tracking}
            runs = [cli("prepare", str(synthetic_source.root), env=env), cli("train", env=env)]
            for path in drop_incoming(tmp_path / "drop"):  # media, and one file that cannot be decoded
                s3_bucket.client.upload_file(str(path), s3_bucket.name, f"incoming/{path.name}")
            runs.append(cli("score", "--format", "jsonl", env=env))
            assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr[-2000:] for r in runs]
            wrong_password = mongo.replace(quote_plus(PASSWORD), quote_plus(PASSWORD + "x"))
            unreachable = mongo.replace(urlsplit(server).netloc, "127.0.0.1:1")
            for uri in (wrong_password, unreachable):
                runs.append(cli("verdicts", "list", env={**env, "MONGO_URI": uri, "MEDIACHECK_MONGO__RETRIES": "0"}))
            assert runs[3].returncode != 0 and runs[4].returncode == 3, [r.stderr[-2000:] for r in runs[3:]]
            assert "MongoDB at 127.0.0.1:1 did not answer" in runs[4].stderr

            verdicts = [json.loads(line) for line in runs[2].stdout.splitlines()]
            assert {v["status"] for v in verdicts} == {"scored", "failed"}
            store = ResultStore.from_uri(mongo, database=settings.mongo.database)
            view = TestClient(create_app(settings=load_settings, store=lambda: store))
            pages = [view.get("/").text, view.get("/api/verdicts").text]
            pages += [view.get(f"/media/{v['content_id']}/").text for v in verdicts if v.get("content_id")]
            written = [
                everything_in_mongo(mongo, settings.mongo.database),
                everything_in_mlflow(MlflowClient(tracking), tmp_path / "artifacts"),
                *(
                    p.read_bytes().decode(errors="replace")
                    for p in settings.storage.root.rglob("*")
                    if p.is_file() and p.name != "mlflow_credentials.json"
                ),  # fmt: skip  (the MLflow login itself)
            ]
        finally:
            subprocess.run([*stack_command(), "down"], capture_output=True, timeout=120)
            kill_leftovers(stack_id)
    secrets = [PASSWORD, quote_plus(PASSWORD), mlflow_password, quote_plus(mlflow_password), AWS_SECRET, DAGSHUB_TOKEN]
    texts = {f"{' '.join(r.args[1:3])} {stream}": getattr(r, stream) for r in runs for stream in ("stdout", "stderr")}
    texts |= {f"page {index}": page for index, page in enumerate(pages)}
    texts |= {f"written {index}": text for index, text in enumerate(written)}
    leaks = {name: [s for s in secrets if s in text] for name, text in texts.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert '"run_id"' in written[0] and "mediacheck-detector" in written[1]  # the dumps did hold the records


def stack_command() -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "scripts" / "stack.py")]
