"""Embedded local services: the MongoDB-wire server used when no ``MONGO_URI`` is set."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

SERVER_BINARY = "secantusd-py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_binary() -> str:
    beside_python = Path(sys.executable).parent / SERVER_BINARY
    found = str(beside_python) if beside_python.exists() else shutil.which(SERVER_BINARY)
    if not found:
        raise RuntimeError(f"{SERVER_BINARY} not found: install the lock (`make install`) or set MONGO_URI")
    return found


def airflow_connection_uri(mongo_uri: str, database: str) -> str:
    """The ``AIRFLOW_CONN_*`` form of a MongoDB URI: MongoHook wants ``mongo://``, with the database as path."""
    scheme, _, rest = mongo_uri.partition("://")
    if scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError(f"not a MongoDB URI: {mongo_uri!r}")
    authority, _, query = rest.partition("?")
    authority = authority.split("/", 1)[0]
    extras = [query] if query else []
    if scheme == "mongodb+srv":
        extras.append("srv=true")
    return f"mongo://{authority}/{database}" + (f"?{'&'.join(extras)}" if extras else "")


def airflow_environment(
    *, project_root: Path, airflow_home: Path, mongo_uri: str, database: str, conn_id: str = "mongo_default"
) -> dict[str, str]:
    """Environment for running the project's DAGs on embedded defaults (SQLite, local folders)."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        f"AIRFLOW_CONN_{conn_id.upper()}": airflow_connection_uri(mongo_uri, database),
    }


def _uri_file(storage: Path | str) -> Path:
    return Path(storage).with_suffix(".uri")


def running_embedded_uri(storage: Path | str) -> str | None:
    """URI of an embedded server already serving ``storage`` (started by ``make up``), if any."""
    uri_file = _uri_file(storage)
    if not uri_file.exists():
        return None
    uri = uri_file.read_text().strip()
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
            return uri
    except PyMongoError:
        return None


@contextmanager
def mongo_uri(configured: str | None, storage: Path) -> Iterator[str]:
    """Yield the configured MongoDB URI, else a running embedded server's, else start one."""
    existing = configured or running_embedded_uri(storage)
    if existing:
        yield existing
        return
    with embedded_mongo(storage) as uri:
        yield uri


def start_mongo_server(
    storage: Path | str, *, port: int | None = None, detach: bool = False, startup_timeout_s: float = 30
) -> tuple[subprocess.Popen, str]:
    """Start the embedded MongoDB-wire server on 127.0.0.1; return the process and its URI.

    ``storage`` is a folder (data survives restarts) or ``":memory:"`` for a throwaway store.
    A detached server outlives this process (``make up``); its URI is written beside the
    storage folder so that other commands reuse it.
    """
    in_memory = str(storage) == ":memory:"
    if not in_memory:
        Path(storage).mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = subprocess.DEVNULL if in_memory else open(Path(storage).with_suffix(".log"), "ab")  # noqa: SIM115 - the server process writes to it until it stops
    process = subprocess.Popen(
        [
            _server_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(storage),
            "--log-level",
            "WARNING",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=detach,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        _wait_until_up(uri, process, startup_timeout_s)
    except RuntimeError:
        stop_process(process)
        raise
    if not in_memory:
        _uri_file(storage).write_text(uri)
    return process, uri


def stop_process(process: subprocess.Popen, *, grace_s: float = 15) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def embedded_mongo(storage: Path | str, *, port: int | None = None) -> Iterator[str]:
    """Run the embedded server for the duration of a ``with`` block and yield its URI."""
    process, uri = start_mongo_server(storage, port=port)
    try:
        yield uri
    finally:
        if str(storage) != ":memory:":
            _uri_file(storage).unlink(missing_ok=True)
        stop_process(process)


def _wait_until_up(uri: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{SERVER_BINARY} exited with code {process.returncode} before accepting connections")
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
                return
        except PyMongoError:
            time.sleep(0.2)
    raise RuntimeError(f"{SERVER_BINARY} did not answer on {uri} within {timeout_s:.0f} s")
