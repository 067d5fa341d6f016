"""`make up` / `make down`: the local stack on 127.0.0.1, stopped exactly by the PIDs it started.

up: the embedded MongoDB-wire server (unless MONGO_URI is set), Airflow 3 standalone
(SQLite under .airflow/), and the MLflow UI over the tracking store under .data/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.services import airflow_environment, running_embedded_uri, start_mongo_server
from pipeline.settings import PROJECT_ROOT, get_settings

AIRFLOW_PORT, MLFLOW_PORT = 8080, 5000
BIN = Path(sys.executable).parent
PASSWORD_FILE = PROJECT_ROOT / ".airflow" / "simple_auth_manager_passwords.json.generated"


def state_dir() -> Path:
    folder = get_settings().storage.root / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def up() -> int:
    settings = get_settings()
    running = _running_pids()
    if running:
        print(f"the stack is already running ({', '.join(running)}); stop it first with: make down")
        return 1
    pids: dict[str, int] = {}
    uri = settings.mongo.uri or running_embedded_uri(settings.storage.root / "mongo")
    if uri is None:
        process, uri = start_mongo_server(settings.storage.root / "mongo", detach=True)
        pids["mongo"] = process.pid
    env = {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT,
            airflow_home=PROJECT_ROOT / ".airflow",
            mongo_uri=uri,
            database=settings.mongo.database,
            conn_id=settings.mongo.airflow_conn_id,
        ),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone spawns `airflow` by name
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(AIRFLOW_PORT),
    }
    pids["airflow"] = _spawn([BIN / "airflow", "standalone"], "airflow", env)
    pids["mlflow"] = _spawn(
        [
            BIN / "mlflow",
            "ui",
            "--host",
            "127.0.0.1",
            "--port",
            str(MLFLOW_PORT),
            "--backend-store-uri",
            settings.mlflow_uri,
        ],
        "mlflow",
        env,
    )
    (state_dir() / "pids.json").write_text(json.dumps(pids))
    for name, url in (("Airflow", f"http://127.0.0.1:{AIRFLOW_PORT}"), ("MLflow", f"http://127.0.0.1:{MLFLOW_PORT}")):
        print(f"{name:8} {url}  ({'up' if _wait_http(url, 120) else 'not answering yet: see .data/stack/*.log'})")
    print(f"MongoDB  {uri}")
    print(f"Airflow login: admin, password in {PASSWORD_FILE}")
    print("Stop everything with: make down")
    return 0


def down() -> int:
    pid_file = state_dir() / "pids.json"
    if not pid_file.exists():
        print("nothing to stop")
        return 0
    for name, pid in json.loads(pid_file.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {name} (process group {pid})")
        except ProcessLookupError:
            print(f"{name} (pid {pid}) was not running")
    pid_file.unlink()
    return 0


def _running_pids() -> dict[str, int]:
    pid_file = state_dir() / "pids.json"
    if not pid_file.exists():
        return {}
    alive = {}
    for name, pid in json.loads(pid_file.read_text()).items():
        try:
            os.kill(pid, 0)
            alive[name] = pid
        except ProcessLookupError:
            pass
    return alive


def _spawn(command: list, name: str, env: dict) -> int:
    log = open(state_dir() / f"{name}.log", "ab")  # noqa: SIM115 - the detached process keeps writing to it
    return subprocess.Popen(
        [str(c) for c in command],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
    ).pid


def _wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(1)
    return False


if __name__ == "__main__":
    sys.exit({"up": up, "down": down}[sys.argv[1]]())
