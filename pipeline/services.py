"""Embedded local services: the MongoDB-wire server used when no ``MONGO_URI`` is set, and their files.

Everything they write (databases, logs, credentials) is readable by its owner only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qsl, unquote_plus

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from pipeline.redact import redact

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.store import ResultStore

SERVER_BINARY = "secantusd-py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def owner_only() -> None:
    """Create every later file of this process and its children readable by the owner only (umask 077)."""
    os.umask(0o077)


def private_folder(folder: Path) -> Path:
    """``folder``, created if missing, closed to everyone but its owner (0700) even if it existed before."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, readable by its owner only (0600), even if it existed before."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "ab")


def _server_binary() -> str:
    beside_python = Path(sys.executable).parent / SERVER_BINARY
    found = str(beside_python) if beside_python.exists() else shutil.which(SERVER_BINARY)
    if not found:
        raise RuntimeError(f"{SERVER_BINARY} not found: install the lock (`make install`) or set MONGO_URI")
    return found


# Mechanisms whose credentials live outside the database (pymongo authenticates them against "$external").
EXTERNAL_AUTH_MECHANISMS = frozenset({"GSSAPI", "MONGODB-X509", "MONGODB-AWS", "MONGODB-OIDC"})


def airflow_connection(mongo_uri: str, database: str) -> dict:
    """The Airflow connection (``AIRFLOW_CONN_*`` JSON form) through which MongoHook reaches ``mongo_uri``.

    MongoHook rebuilds a client URI with the connection's schema (here ``database``) as its
    path, and pymongo reads that path as the auth database. So the auth database pymongo
    would use for ``mongo_uri`` itself (its ``authSource``, else its path, else ``admin``)
    is carried as an explicit ``authSource``: a URI that works for the CLI works for the DAGs.
    The JSON form keeps multi-host (replica set) authorities intact, which Airflow's URI form cannot.
    """
    scheme, _, rest = mongo_uri.partition("://")
    if scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError(f"not a MongoDB URI (mongodb:// or mongodb+srv://): {redact(mongo_uri)!r}")
    authority, _, query = rest.partition("?")
    authority, _, path_database = authority.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    login, has_password, password = userinfo.partition(":")
    extra: dict[str, object] = dict(parse_qsl(query, keep_blank_values=True))
    if scheme == "mongodb+srv":
        extra["srv"] = True
    named = {key.lower(): value for key, value in extra.items()}
    mechanism = str(named.get("authmechanism", "")).upper()
    if userinfo and "authsource" not in named and mechanism not in EXTERNAL_AUTH_MECHANISMS:
        default = "$external" if mechanism == "PLAIN" else "admin"
        extra["authSource"] = unquote_plus(path_database) or default
    connection = {"conn_type": "mongo", "host": hosts, "schema": database, "extra": extra}
    if userinfo:
        connection["login"] = unquote_plus(login)
    if has_password:  # MongoHook drops the user name without a password, as X.509 logins have none
        connection["password"] = unquote_plus(password)
    return connection


# SQLite's own wait for a lock is 5 s: under a burst of task updates the API server then answered 500
# ("database is locked"); Airflow imports these by name (the [database] connect-args options).
SQLITE_CONNECT_ARGS = {"timeout": 30}


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
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(airflow_connection(mongo_uri, database)),
    }


def local_uri(port: int) -> str:
    """The URI of the embedded server listening on 127.0.0.1:``port``."""
    return f"mongodb://127.0.0.1:{port}/?directConnection=true"


def embedded_uri_file(storage: Path | str) -> Path:
    """Where a running embedded server's URI is kept, beside its storage: other commands find it there."""
    return Path(storage).with_suffix(".uri")


def running_embedded_uri(storage: Path | str) -> str | None:
    """URI of an embedded server already serving ``storage`` (started by ``make up``), if any."""
    uri_file = embedded_uri_file(storage)
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


@contextmanager
def open_store(settings: Settings) -> Iterator[ResultStore]:
    """The configured database on the server :func:`mongo_uri` finds (or starts for the duration), closed on exit."""
    from pipeline.store import ResultStore

    with mongo_uri(settings.mongo.uri, settings.storage.local_root / "mongo") as uri:
        store = ResultStore.from_uri(
            uri, database=settings.mongo.database, retries=settings.mongo.retries, timeout_s=settings.mongo.timeout_s
        )
        try:
            yield store
        finally:
            store.client.close()


def mongo_server_command(storage: Path | str, port: int, *, auth: bool = False) -> list[str]:
    """The embedded MongoDB-wire server's command line, on 127.0.0.1:``port`` over ``storage``."""
    command = [_server_binary(), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
    return [*command, "--log-level", "WARNING", *(["--auth"] if auth else [])]


def worker_hostname() -> str:
    """This machine's name, qualified by ``MEDIACHECK_WORKER_NAME`` where several workers share it.

    Airflow records it on every task instance (``[core] hostname_callable``), so each worker's share of
    the work stays visible when the native topology runs two Celery workers on one machine.
    """
    name = socket.getfqdn()
    return f"{worker}.{name}" if (worker := os.environ.get("MEDIACHECK_WORKER_NAME")) else name


def start_mongo_server(
    storage: Path | str,
    *,
    port: int | None = None,
    auth: bool = False,
    startup_timeout_s: float = 30,
) -> tuple[subprocess.Popen, str]:
    """Start the embedded MongoDB-wire server on 127.0.0.1; return the process and its URI.

    ``storage`` is a folder (data survives restarts) or ``":memory:"`` for a throwaway store.
    Its URI is written beside the storage folder so that other commands reuse it. With ``auth`` every command but the
    handshake needs a login (SCRAM-SHA-256) of a user created before, without ``auth``.
    """
    in_memory = str(storage) == ":memory:"
    if not in_memory:
        private_folder(Path(storage))
    port = port or free_port()
    log = subprocess.DEVNULL if in_memory else private_log(Path(storage).with_suffix(".log"))
    process = subprocess.Popen(
        mongo_server_command(storage, port, auth=auth),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    if log is not subprocess.DEVNULL:
        log.close()  # the server writes through its own copy
    uri = local_uri(port)
    try:
        _wait_until_up(uri, process, startup_timeout_s)
    except RuntimeError:
        stop_process(process)
        raise
    if not in_memory:
        embedded_uri_file(storage).write_text(uri)
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
            embedded_uri_file(storage).unlink(missing_ok=True)
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
