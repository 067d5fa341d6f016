"""`make up` / `make down`: the local stack on 127.0.0.1, and stopping every process of it.

up: the embedded MongoDB-wire server (unless MONGO_URI is set), Airflow 3 standalone (SQLite
under .airflow/) and, over a local tracking store, the MLflow UI behind MLflow's basic-auth
login. ``stack.py up --airflow-home DIR`` puts Airflow elsewhere; ``AIRFLOW__API__PORT`` and
``mlflow.ui_url`` choose the ports.

Every process started carries a marker in its environment, so down finds all of them, task
processes in their own process groups and orphans included; it sends SIGTERM, then SIGKILL to
what is left after a grace period, and returns once none is alive. Secrets reach the children
through their environment, never their command line; what is printed is redacted; files are
created readable by their owner only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import psutil

from pipeline.redact import MIN_SECRET, configured_secrets, hide, redact, secrets_in
from pipeline.services import (
    airflow_environment,
    owner_only,
    private_folder,
    private_log,
    running_embedded_uri,
    start_mongo_server,
)
from pipeline.settings import PROJECT_ROOT, Settings, get_settings

DEFAULT_AIRFLOW_HOME = PROJECT_ROOT / ".airflow"
DEFAULT_AIRFLOW_PORT, DEFAULT_MLFLOW_PORT = 8080, 5000
BIN = Path(sys.executable).parent
MARKER = "MEDIACHECK_STACK_ID"  # in the environment of every process of one `make up`
GRACE_S = 30.0  # MLflow's workers alone take about 15 s to exit
KILL_WAIT_S = 10.0
# Tracking servers with their own UI: nothing to start locally.
REMOTE_TRACKING = ("http://", "https://", "databricks")
ADMIN = "admin"
SECRET_NAME = re.compile(r"(?i)password|secret|token|_key$")


def state_dir() -> Path:
    return private_folder(get_settings().storage.root / "stack")


def up(airflow_home: Path = DEFAULT_AIRFLOW_HOME) -> int:
    owner_only()  # databases, logs and credentials of every child: owner only
    settings = get_settings()
    state = _read_state()
    if state and (running := _members(state)):
        print(f"the stack is already running ({len(running)} processes); stop it first with: make down")
        return 1
    private_folder(settings.storage.root)
    private_folder(airflow_home)
    state = begin()
    uri = settings.mongo.uri or running_embedded_uri(settings.storage.root / "mongo")
    if uri is None:
        process, uri = start_mongo_server(settings.storage.root / "mongo", detach=True)
        record(state, "mongo", process.pid)
    airflow_password_file = airflow_credentials(airflow_home)
    port = int(os.environ.get("AIRFLOW__API__PORT", DEFAULT_AIRFLOW_PORT))
    env = {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT,
            airflow_home=airflow_home,
            mongo_uri=uri,
            database=settings.mongo.database,
            conn_id=settings.mongo.airflow_conn_id,
        ),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone spawns `airflow` by name
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # where task processes report to: the API server above (Airflow's default assumes port 8080)
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    }
    launch(state, "airflow", [BIN / "airflow", "standalone"], env)
    started = [("Airflow", f"http://127.0.0.1:{port}", airflow_password_file)]
    ui = mlflow_ui(settings, state_dir())
    if ui is None:
        print(f"MLflow   {redact(settings.mlflow_uri)}  (remote tracking server: no local UI started)")
    else:
        command, mlflow_env, credentials_file = ui
        launch(state, "mlflow", command, {**env, **mlflow_env})
        started.append(("MLflow", f"http://127.0.0.1:{_mlflow_port(settings)}", credentials_file))
    for name, url, password_file in started:
        status = "up" if _wait_http(url, 120) else "not answering yet: see .data/stack/*.log"
        print(f"{name:8} {url}  ({status}; login {ADMIN}, password in {password_file})")
    print(f"MongoDB  {redact(uri)}")
    print("Stop everything with: make down")
    return 0


def begin() -> dict:
    """A new stack's state, saved before anything starts (so that down finds a half-started stack)."""
    state = {"id": uuid.uuid4().hex, "pids": {}}
    os.environ[MARKER] = state["id"]  # inherited by every child, grandchild and task process
    _save_state(state)
    return state


def launch(state: dict, name: str, command: list, env: dict) -> None:
    """Start one component in a session of its own, its output redacted into ``NAME.log``, and record it.

    The output goes through ``stack.py log``: Airflow's LocalExecutor echoes task logs to the
    scheduler's output unmasked (the task log files are masked), and libraries print URIs.
    """
    with private_log(state_dir() / f"{name}.log") as log:  # the children write through their own copies
        writer = subprocess.Popen(
            [sys.executable, __file__, "log"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # not hung up with the terminal that ran `make up`
        )
    try:
        process = subprocess.Popen(
            [str(c) for c in command],
            stdout=writer.stdin,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    finally:
        writer.stdin.close()
    record(state, name, process.pid)


def copy_redacted(source: BinaryIO, target: BinaryIO, hidden: list[str]) -> None:
    """Copy ``source`` to ``target`` line by line, URI passwords and each string in ``hidden`` shown as ``***``."""
    for line in source:
        target.write(hide(line.decode("utf-8", "surrogateescape"), hidden).encode("utf-8", "surrogateescape"))
        target.flush()


def environment_secrets(environment: dict[str, str]) -> list[str]:
    """Secrets in an environment: the configured ones, any URI's password, and variables named like secrets.

    Values under ``MIN_SECRET`` characters are left alone, as Airflow does: masking them would garble every line.
    """
    named = [value for name, value in environment.items() if SECRET_NAME.search(name)]
    found = configured_secrets(get_settings()) + named + [s for v in environment.values() for s in secrets_in(v)]
    return sorted({secret for secret in found if len(secret) >= MIN_SECRET}, key=len, reverse=True)


def log_command() -> int:
    """``stack.py log``: the redacting writer between a component and its log; lasts until the component closes it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # outlive the component and keep its last words
    copy_redacted(sys.stdin.buffer, sys.stdout.buffer, environment_secrets(dict(os.environ)))
    return 0


def record(state: dict, name: str, pid: int) -> None:
    state["pids"][name] = pid
    _save_state(state)


def down(grace_s: float = GRACE_S) -> int:
    state = _read_state()
    if state is None:
        print("nothing to stop")
        return 0
    stopped, killed, survivors = stop(state, grace_s)
    if survivors:
        print(f"could not stop {len(survivors)} processes: {', '.join(str(p.pid) for p in survivors)}")
        return 1
    _state_file().unlink(missing_ok=True)
    forced = f" ({killed} still running after {grace_s:.0f} s: killed)" if killed else ""
    print(f"stopped {stopped} processes{forced}")
    return 0


def stop(state: dict, grace_s: float) -> tuple[int, int, list[psutil.Process]]:
    """SIGTERM every process of the stack, SIGKILL those left after ``grace_s``; (stopped, killed, survivors).

    The processes are looked up again on every round: a component starting a child while
    shutting down, or a task process orphaned by its supervisor, is still found.
    """
    signalled: set[int] = set()
    deadline = time.monotonic() + grace_s
    while (alive := _members(state)) and time.monotonic() < deadline:
        for process in alive:
            if process.pid not in signalled:
                _signal(process, signal.SIGTERM)
                signalled.add(process.pid)
        time.sleep(0.2)
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_WAIT_S
    while (alive := _members(state)) and time.monotonic() < deadline:
        for process in alive:
            if _signal(process, signal.SIGKILL):
                killed.add(process.pid)
        time.sleep(0.2)
    return len(signalled | killed), len(killed), alive


def airflow_credentials(airflow_home: Path) -> Path:
    """Airflow's admin password file, generated here (0600) so that Airflow never echoes the password into its log."""
    password_file = airflow_home / "simple_auth_manager_passwords.json.generated"
    if not password_file.exists():
        _write_private(password_file, json.dumps({ADMIN: _password()}) + "\n")
    password_file.chmod(0o600)
    return password_file


def mlflow_ui(settings: Settings, folder: Path) -> tuple[list[str], dict[str, str], Path] | None:
    """(command, environment, credentials file) of the MLflow UI behind basic-auth; None for a remote server.

    The admin password and Flask secret key are generated once and kept in a 0600 file; the
    tracking store URI, which may hold a password, goes by environment, never on the command line.
    """
    if settings.mlflow_uri.startswith(REMOTE_TRACKING):
        return None
    credentials_file = folder / "mlflow_credentials.json"
    auth_database = folder / "mlflow_auth.db"
    if not credentials_file.exists():
        # MLflow creates the admin only in an empty user store: one made with lost credentials is useless.
        auth_database.unlink(missing_ok=True)
        _write_private(credentials_file, json.dumps({ADMIN: _password(), "secret_key": secrets.token_hex(32)}) + "\n")
    credentials_file.chmod(0o600)
    credentials = json.loads(credentials_file.read_text())
    config = folder / "mlflow_auth.ini"
    _write_private(
        config,
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{auth_database}\nadmin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    command = [
        str(BIN / "mlflow"),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(_mlflow_port(settings)),
        "--workers",
        "1",  # one local user: one worker (each is a full MLflow server in memory)
        # runs logged through this server keep their artifacts beside the database, not in the checkout
        "--artifacts-destination",
        (settings.storage.root / "mlartifacts").as_uri(),
    ]
    environment = {
        "MLFLOW_BACKEND_STORE_URI": settings.mlflow_uri,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials[ADMIN],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials["secret_key"],
    }
    return command, environment, credentials_file


def _mlflow_port(settings: Settings) -> int:
    """The port of ``mlflow.ui_url``, where the Detections view links to."""
    return urlsplit(settings.mlflow.ui_url or "").port or DEFAULT_MLFLOW_PORT


def _members(state: dict) -> list[psutil.Process]:
    """Every live process of the stack: those with its marker, members of the sessions it started, their descendants."""
    sessions = {pid for pid in state["pids"].values() if _session_is_ours(pid, state["id"])}
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            marked = state["id"] is not None and process.environ().get(MARKER) == state["id"]
            if marked or os.getsid(process.pid) in sessions:
                found[process.pid] = process
        except (psutil.Error, OSError):  # gone, or another user's
            continue
    for process in list(found.values()):
        try:
            found.update({child.pid: child for child in process.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)  # `make down` run from inside the stack stops everything else
    return [p for p in found.values() if _alive(p)]


def _session_is_ours(pid: int, stack_id: str | None) -> bool:
    """A recorded session leader's session is ours unless its PID now belongs to an unrelated process."""
    try:
        return stack_id is None or psutil.Process(pid).environ().get(MARKER) == stack_id  # None: older pids.json
    except psutil.NoSuchProcess:
        return True  # Linux does not reuse the PID of a session that still has members
    except psutil.Error:
        return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(process: psutil.Process, signum: int) -> bool:
    try:
        process.send_signal(signum)
        return True
    except psutil.Error:
        return False


def _state_file() -> Path:
    return state_dir() / "pids.json"


def _read_state() -> dict | None:
    if not _state_file().exists():
        return None
    state = json.loads(_state_file().read_text())
    return state if "id" in state else {"id": None, "pids": state}  # a pids.json of an older `make up`


def _save_state(state: dict) -> None:
    _write_private(_state_file(), json.dumps(state))


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))


def _wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:  # answering, e.g. 401 behind a login
            return True
        except OSError:
            time.sleep(1)
    return False


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack")
    start.add_argument("--airflow-home", type=Path, default=DEFAULT_AIRFLOW_HOME)
    halt = commands.add_parser("down", help="stop every process of the stack")
    halt.add_argument("--grace-s", type=float, default=GRACE_S, help="wait this long after SIGTERM, then SIGKILL")
    commands.add_parser("log", help="(internal) copy standard input to standard output, secrets masked")
    options = parser.parse_args(arguments)
    if options.command == "up":
        return up(options.airflow_home.resolve())
    return down(options.grace_s) if options.command == "down" else log_command()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
