import json
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from urllib.parse import quote_plus

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from pipeline.services import (
    airflow_connection,
    airflow_environment,
    embedded_mongo,
    mongo_uri,
    owner_only,
    running_embedded_uri,
    start_mongo_server,
    stop_process,
)
from pipeline.settings import PROJECT_ROOT

USER, PASSWORD = "mc", "s3cr:t@x/y"  # a password that needs escaping in a URI


@contextmanager
def mongo_with_login(storage):
    """An embedded server that requires a login, with user USER (in ``admin``); yields its URI without credentials."""
    process, uri = start_mongo_server(storage)
    with MongoClient(uri) as client:
        client.admin.command("createUser", USER, pwd=PASSWORD, roles=["root"])
    stop_process(process)
    process, uri = start_mongo_server(storage, auth=True)
    try:
        yield uri
    finally:
        stop_process(process)


def with_login(uri: str, database: str = "") -> str:
    """``uri`` with USER's escaped credentials and, optionally, a database path."""
    return uri.replace("://", f"://{USER}:{quote_plus(PASSWORD)}@").replace("/?", f"/{database}?")


def test_embedded_server_keeps_data_across_restarts(tmp_path):
    storage = tmp_path / "mongo"
    with embedded_mongo(storage) as uri:
        assert running_embedded_uri(storage) == uri
        with MongoClient(uri) as client:
            client.db.things.insert_one({"_id": 1, "kept": True})
    assert running_embedded_uri(storage) is None
    with embedded_mongo(storage) as uri, MongoClient(uri) as client:
        assert client.db.things.find_one({"_id": 1}) == {"_id": 1, "kept": True}


def test_embedded_server_files_are_private(tmp_path):
    previous = os.umask(0o022)
    try:
        owner_only()
        assert os.umask(0o077) == 0o077
        (tmp_path / "mongo.log").write_bytes(b"")  # an older, world-readable log is closed up too
        (tmp_path / "mongo.log").chmod(0o644)
        with embedded_mongo(tmp_path / "mongo"):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "mongo").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "mongo.log").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in (tmp_path / "mongo").rglob("*"))


def test_configured_uri_starts_nothing(tmp_path):
    with mongo_uri("mongodb://db.example:27017", tmp_path / "mongo") as uri:
        assert uri == "mongodb://db.example:27017"
    assert not (tmp_path / "mongo").exists()


@pytest.mark.parametrize(
    "uri, expected",
    [
        (
            "mongodb://127.0.0.1:1234/?directConnection=true",
            {"host": "127.0.0.1:1234", "extra": {"directConnection": "true"}},
        ),
        (
            "mongodb://user:p%40ss@host:27017/?directConnection=true",
            {
                "host": "host:27017",
                "login": "user",
                "password": "p@ss",
                "extra": {"directConnection": "true", "authSource": "admin"},
            },
        ),
        (
            "mongodb://user:pw@h1:1,h2:2/appdb?replicaSet=rs",
            {
                "host": "h1:1,h2:2",
                "login": "user",
                "password": "pw",
                "extra": {"replicaSet": "rs", "authSource": "appdb"},
            },
        ),
        (
            "mongodb+srv://user:pw@cluster.example.net/?retryWrites=true&authSource=other",
            {
                "host": "cluster.example.net",
                "login": "user",
                "password": "pw",
                "extra": {"retryWrites": "true", "authSource": "other", "srv": True},
            },
        ),
        (
            "mongodb://user:pw@host/?authMechanism=PLAIN",
            {
                "host": "host",
                "login": "user",
                "password": "pw",
                "extra": {"authMechanism": "PLAIN", "authSource": "$external"},
            },
        ),
    ],
)
def test_airflow_connection(uri, expected):
    assert airflow_connection(uri, "results") == {"conn_type": "mongo", "schema": "results", **expected}


def test_airflow_connection_rejects_other_schemes_without_echoing_passwords():
    with pytest.raises(ValueError, match="not a MongoDB URI") as error:
        airflow_connection("postgres://u:secret@x", "db")
    assert "secret" not in str(error.value)


# Prints how MongoHook's client, built from each Airflow connection, would log in and where it connects.
HOOK_PROBE = """
import json, sys
from airflow.providers.mongo.hooks.mongo import MongoHook

report = {}
for conn_id in json.loads(sys.argv[1]):
    client = MongoHook(mongo_conn_id=conn_id).get_conn()
    credentials = client.options.pool_options._credentials
    report[conn_id] = {
        "credentials": credentials and [credentials.mechanism, credentials.source, credentials.username,
                                        credentials.password],
        "seeds": sorted(map(list, client._topology_settings.seeds)),
        "replica_set": client.options.replica_set_name,
    }
    if conn_id == "with_login":
        client.mediacheck.probe.insert_one({"written": True})  # needs the login to succeed
print(json.dumps(report))
"""


def client_view(uri: str) -> dict:
    """What HOOK_PROBE reports, for a client made from ``uri`` directly (as the CLI makes it)."""
    client = MongoClient(uri, connect=False)
    credentials = client.options.pool_options._credentials
    return {
        "credentials": credentials
        and [credentials.mechanism, credentials.source, credentials.username, credentials.password],
        "seeds": sorted(map(list, client._topology_settings.seeds)),
        "replica_set": client.options.replica_set_name,
    }


def test_mongo_hook_logs_in_like_the_uri_itself(tmp_path):
    """A MONGO_URI that works for the CLI works for DAG tasks: the auth database survives into MongoHook."""
    uris = {
        "no_login": "mongodb://127.0.0.1:1/?directConnection=true",
        "default_auth_database": f"mongodb://u:{quote_plus(PASSWORD)}@h:27017/?directConnection=true",
        "path_auth_database": "mongodb://u:pw@h1:1,h2:2/appdb?replicaSet=rs",
        "explicit_auth_source": "mongodb://u:pw@h/appdb?authSource=admin&authMechanism=SCRAM-SHA-256",
        "plain": "mongodb://u:pw@h/?authMechanism=PLAIN",
    }
    with mongo_with_login(tmp_path / "mongo") as server:
        uris["with_login"] = with_login(server)
        old_mapping = with_login(server, database="mediacheck")  # the database where the auth database goes
        with MongoClient(old_mapping, serverSelectionTimeoutMS=3000) as client, pytest.raises(OperationFailure):
            client.mediacheck.probe.insert_one({})  # "authentication failed": what every DAG task used to get
        env = {**os.environ}
        for conn_id, uri in uris.items():
            env |= airflow_environment(
                project_root=PROJECT_ROOT,
                airflow_home=tmp_path / "airflow",
                mongo_uri=uri,
                database="mediacheck",
                conn_id=conn_id,
            )
        probe = subprocess.run(
            [sys.executable, "-c", HOOK_PROBE, json.dumps(list(uris))],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        with MongoClient(uris["with_login"]) as client:
            assert client.mediacheck.probe.count_documents({"written": True}) == 1
    assert json.loads(probe.stdout.splitlines()[-1]) == {conn_id: client_view(uri) for conn_id, uri in uris.items()}


def test_airflow_metadata_database_waits_for_locks(tmp_path):
    """Airflow's SQLite connections wait 30 s for a lock (SQLite's own 5 s gave 500s under load)."""
    env = {**os.environ} | airflow_environment(
        project_root=PROJECT_ROOT, airflow_home=tmp_path / "airflow", mongo_uri="mongodb://h/", database="d"
    )
    probe = "from airflow import settings; connection = settings.engine.raw_connection(); " + (
        "print(connection.execute('PRAGMA busy_timeout').fetchone()[0])"
    )
    answer = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert int(answer.stdout.split()[-1]) == 30_000
