"""`make cluster`: docker-compose.yaml's production topology, natively on this machine, without Docker.

Read from the compose file itself, so the two stay one configuration: every Airflow service's
command, the Airflow/MLflow/MongoDB environment (`x-airflow-common`), the MLflow server's
command and the health checks. Natively, compose's hosts are ports on 127.0.0.1:

| compose service    | here                                                                        |
|--------------------|-----------------------------------------------------------------------------|
| postgres           | Debian's PostgreSQL (`postgresql`), Airflow's and MLflow's databases        |
| redis              | Debian's Redis (`redis-server`), the Celery broker, with a password         |
| mongo              | the embedded MongoDB-wire server (or `MONGO_URI`)                           |
| mlflow             | `mlflow server`, PostgreSQL backend, artifacts under `storage.local_root`   |
| airflow-init       | `airflow db migrate` (once)                                                 |
| airflow-* roles    | API server, scheduler, DAG processor, triggerer, `--workers` Celery workers |
| minio, its buckets | none: the watched bucket is `storage.incoming_uri` (a folder, or `s3://`)   |

Every component runs under `stack.py`'s supervisor (restarts, health, `make status`, `make down`).
Secrets are generated once into a 0600 file and reach the components by environment only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from stack import (
    ADMIN,
    BIN,
    DEFAULT_AIRFLOW_PORT,
    Component,
    mlflow_port,
    mongo_component,
    start,
    state_dir,
    write_private,
)

from pipeline.services import airflow_connection, free_port, owner_only, private_folder
from pipeline.settings import PROJECT_ROOT, Settings, get_settings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yaml"
POSTGRES_INIT = PROJECT_ROOT / "docker" / "postgres-init.sql"
DEFAULT_AIRFLOW_HOME = PROJECT_ROOT / ".airflow-cluster"
DEFAULT_WORKERS = 2
# The Airflow roles, in compose's start order (each waits for the one before to be healthy).
AIRFLOW_ROLES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
WORKER = "airflow-worker"
# Compose services with no native counterpart, and why.
NOT_STARTED = {
    "minio": "no S3 server is packaged for Debian: the watched bucket is storage.incoming_uri "
    "(a shared folder, or s3:// with the AWS_* variables set)",
    "minio-buckets": "creates MinIO's buckets",
    "airflow-worker-gpu": "the 'gpu' profile: an NVIDIA GPU worker (make install GPU=1 on a GPU host)",
}
# Variables of x-airflow-common whose compose value cannot hold natively, and why.
REPLACED = {
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "compose's path is inside the image",
    "AIRFLOW__CELERY__BROKER_URL": "Redis needs a password here: 127.0.0.1 is shared by every local user",
    "AIRFLOW_CONN_MONGO_DEFAULT": "the embedded MongoDB-wire server, or MONGO_URI",
    "MONGO_URI": "the embedded MongoDB-wire server, or MONGO_URI",
    "MEDIACHECK_MLFLOW__UI_URL": "the MLflow server's native port",
}
# Variables for compose's MinIO: natively taken from the caller's environment and settings, if set.
FROM_CALLER = ("MEDIACHECK_STORAGE__INCOMING_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")  # fmt: skip
# A URL's host and port (after its scheme and any user:password@), where compose names a service.
URL_HOST = re.compile(r"^(?P<head>[\w+.-]+://(?:[^@/]*@)?)(?P<host>[\w.-]+)(?::\d+)?")
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Ports:
    """Where each compose service answers natively, all on 127.0.0.1."""

    postgres: int
    redis: int
    mlflow: int
    apiserver: int
    scheduler_health: int

    def of(self, service: str) -> int | None:
        """The port of a compose service's host name; None for any other host."""
        return {
            "postgres": self.postgres,
            "redis": self.redis,
            "mlflow": self.mlflow,
            "airflow-apiserver": self.apiserver,
        }.get(service)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def native_value(value: str, ports: Ports, credentials: dict[str, str]) -> str:
    """A compose value with its ``${VARIABLE}``s filled in and its service hosts as 127.0.0.1 ports."""

    def rehost(match: re.Match) -> str:
        port = ports.of(match["host"])
        return f"{match['head']}127.0.0.1:{port}" if port else match[0]

    filled = COMPOSE_VARIABLE.sub(lambda m: credentials[m[1]], str(value))
    return URL_HOST.sub(rehost, filled)


def health_url(service: dict, ports: dict[int, int]) -> str | None:
    """The HTTP URL of a compose health check (``urlopen('http://localhost:P/...')``), its port mapped."""
    check = " ".join(map(str, service.get("healthcheck", {}).get("test", [])))
    found = re.search(r"http://localhost:(\d+)(/[^'\"]*)", check)
    return f"http://127.0.0.1:{ports[int(found[1])]}{found[2]}" if found else None


def credentials_file() -> Path:
    return state_dir() / "cluster_credentials.json"


def cluster_credentials() -> dict[str, str]:
    """The compose file's secrets (its ``${VARIABLE}``s), generated once and kept in a 0600 file.

    New secrets also start a new PostgreSQL cluster: one left from lost secrets would refuse every login.
    """
    from cryptography.fernet import Fernet

    path = credentials_file()
    if path.exists():
        return json.loads(path.read_text())
    shutil.rmtree(postgres_data(), ignore_errors=True)
    generated = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "REDIS_PASSWORD": secrets.token_urlsafe(24),
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }
    write_private(path, json.dumps(generated))
    return generated


def airflow_environment(
    spec: dict, ports: Ports, credentials: dict[str, str], *, mongo_uri: str, settings: Settings, airflow_home: Path
) -> dict[str, str]:
    """The environment of every Airflow role: compose's ``x-airflow-common`` made native (see REPLACED)."""
    environment = {}
    for name, value in spec["x-airflow-common"]["environment"].items():
        if name in FROM_CALLER:
            if name in os.environ:
                environment[name] = os.environ[name]
        elif name not in REPLACED:
            environment[name] = native_value(value, ports, credentials)
    return {
        **environment,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(state_dir() / "airflow_passwords.json"),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{credentials['REDIS_PASSWORD']}@127.0.0.1:{ports.redis}/0",
        f"AIRFLOW_CONN_{settings.mongo.airflow_conn_id.upper()}": json.dumps(
            airflow_connection(mongo_uri, settings.mongo.database)
        ),
        "MONGO_URI": mongo_uri,
        "MEDIACHECK_MLFLOW__UI_URL": f"http://127.0.0.1:{ports.mlflow}",
        # what the image sets by its layout (Dockerfile): the DAGs and plugins
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports.apiserver),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports.scheduler_health),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def postgres_bin() -> Path:
    """Debian's PostgreSQL binaries: ``PG_BIN``, else the newest installed major version."""
    if configured := os.environ.get("PG_BIN"):
        return Path(configured)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql redis-server (or set PG_BIN)")
    return versions[-1].parent


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: then it runs as Debian's ``postgres`` user."""
    return "postgres" if os.geteuid() == 0 else None


def postgres_data() -> Path:
    """The cluster's data folder; as root, under Debian's ``/var/lib/postgresql`` (owned by ``postgres``).

    The local root is its owner's alone (0700), so the ``postgres`` user could not reach a folder in it.
    """
    if postgres_user() is None:
        return state_dir() / "postgres"
    tag = hashlib.sha256(str(state_dir()).encode()).hexdigest()[:12]
    return Path("/var/lib/postgresql/mediacheck") / tag / "data"


def initialise_postgres(credentials: dict[str, str]) -> Path:
    """initdb once (superuser ``airflow``, SCRAM passwords), then compose's databases: ``airflow`` and the init SQL."""
    data, user = postgres_data(), postgres_user()
    if (data / "PG_VERSION").exists():
        return data
    data.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password_file = data.parent / "initdb.password"
    password_file.write_text(credentials["POSTGRES_PASSWORD"])
    if user:
        shutil.chown(data.parent, user)
        shutil.chown(password_file, user)
    as_user = ["runuser", "-u", user, "--"] if user else []
    try:
        _run("initdb", [*as_user, postgres_bin() / "initdb", "-D", data, "-U", "airflow", f"--pwfile={password_file}",
              "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"])  # fmt: skip
    finally:
        password_file.unlink(missing_ok=True)
    statements = ["CREATE DATABASE airflow OWNER airflow;", *sql_statements(POSTGRES_INIT.read_text())]
    single_user = [*as_user, postgres_bin() / "postgres", "--single", "-D", data, "postgres"]
    _run("creating the databases", single_user, "\n".join(statements) + "\n")
    return data


def _run(what: str, command: list, stdin: str | None = None) -> None:
    """Run a setup step quietly; on failure, stop with its output."""
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd="/")
    if done.returncode:
        raise SystemExit(f"PostgreSQL: {what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def sql_statements(script: str) -> list[str]:
    """The statements of a simple SQL script (one per ``;``, comments dropped): single-user mode reads one a line."""
    code = " ".join(line.split("--", 1)[0] for line in script.splitlines())
    return [f"{statement.strip()};" for statement in code.split(";") if statement.strip()]


def redis_config(credentials: dict[str, str], port: int) -> Path:
    folder = private_folder(state_dir() / "redis")
    config = folder / "redis.conf"
    write_private(
        config,
        f"bind 127.0.0.1\nport {port}\nrequirepass {credentials['REDIS_PASSWORD']}\n"
        f'save ""\nappendonly no\ndir {folder}\n',
    )
    return config


def mlflow_component(spec: dict, ports: Ports, credentials: dict[str, str], settings: Settings, env: dict) -> Component:
    """Compose's MLflow server command; the backend store goes by environment (it holds a password)."""
    service = spec["services"]["mlflow"]
    words = shlex.split(service["command"])
    native = {
        "--host": "127.0.0.1",
        "--port": str(ports.mlflow),
        "--artifacts-destination": (settings.storage.local_root / "mlartifacts").as_uri(),
    }
    command, backend = [], None
    for option, value in zip(words[2::2], words[3::2], strict=True):
        if option == "--backend-store-uri":
            backend = native_value(value, ports, credentials)
        else:
            command += [option, native.get(option, value)]
    return Component(
        "mlflow",
        [str(BIN / "mlflow"), *words[1:2], *command, "--workers", "1"],
        {**env, "MLFLOW_BACKEND_STORE_URI": backend},
        health=health_url(service, {5000: ports.mlflow}),
    )


def airflow_command(service: dict) -> list[str]:
    command = service["command"]
    return [str(BIN / command[0]), *command[1:]]


def components(
    *,
    settings: Settings,
    ports: Ports,
    credentials: dict[str, str],
    airflow_home: Path,
    workers: int,
    mongo_uri: str | None,
) -> list[Component]:
    """Every native component of the compose topology, in start order."""
    spec = compose()
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    mongo = None
    if mongo_uri is None:
        mongo, mongo_uri = mongo_component(settings.storage.local_root / "mongo")
    env = {
        **base,
        **airflow_environment(
            spec, ports, credentials, mongo_uri=mongo_uri, settings=settings, airflow_home=airflow_home
        ),
    }
    pg = postgres_bin()
    listed = [
        Component(
            "postgres",
            [str(pg / "postgres"), "-D", str(postgres_data()), "-c", "listen_addresses=127.0.0.1",
             "-c", f"port={ports.postgres}", "-c", f"unix_socket_directories={postgres_data()}"],  # fmt: skip
            base,
            health=f"tcp://127.0.0.1:{ports.postgres}",
            user=postgres_user(),
        ),
        Component("redis", ["redis-server", str(redis_config(credentials, ports.redis))], base,
                  health=f"tcp://127.0.0.1:{ports.redis}"),  # fmt: skip
    ]
    if mongo:
        listed.append(mongo)
    listed.append(mlflow_component(spec, ports, credentials, settings, base))
    listed.append(Component("airflow-init", [str(BIN / "airflow"), "db", "migrate"], env, once=True))
    health_ports = {DEFAULT_AIRFLOW_PORT: ports.apiserver, 8974: ports.scheduler_health}
    for role in AIRFLOW_ROLES:
        service = spec["services"][role]
        listed.append(Component(role, airflow_command(service), env, health=health_url(service, health_ports)))
    for index in range(1, workers + 1):
        worker_env = {
            **env,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # one log server per worker
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipeline.services.worker_hostname",
            "MEDIACHECK_WORKER_NAME": f"worker{index}",
        }
        command = [*airflow_command(spec["services"][WORKER]), "--concurrency", "1",
                   "--celery-hostname", f"worker{index}@%h"]  # fmt: skip
        listed.append(Component(f"{WORKER}-{index}", command, worker_env))
    return listed


def admin_password_file(credentials: dict[str, str]) -> Path:
    """The simple auth manager's password file (compose's airflow-init writes the same)."""
    path = state_dir() / "airflow_passwords.json"
    write_private(path, json.dumps({ADMIN: credentials["AIRFLOW_ADMIN_PASSWORD"]}))
    return path


def up(*, airflow_home: Path, workers: int) -> int:
    owner_only()
    settings = get_settings()
    private_folder(settings.storage.local_root)
    private_folder(airflow_home)
    credentials = cluster_credentials()
    initialise_postgres(credentials)
    ports = Ports(
        postgres=free_port(),
        redis=free_port(),
        mlflow=mlflow_port(settings),
        apiserver=int(os.environ.get("AIRFLOW__API__PORT", DEFAULT_AIRFLOW_PORT)),
        scheduler_health=free_port(),
    )
    password_file = admin_password_file(credentials)
    listed = components(
        settings=settings, ports=ports, credentials=credentials, airflow_home=airflow_home,
        workers=workers, mongo_uri=settings.mongo.uri,
    )  # fmt: skip
    code = start(listed, name="cluster")
    if code == 0:
        print(f"Airflow  http://127.0.0.1:{ports.apiserver}  (login {ADMIN}, password in {password_file})")
        print(f"MLflow   http://127.0.0.1:{ports.mlflow}")
        print(f"{workers} Celery workers on queue 'default'; health: make status; stop: make down")
    return code


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--airflow-home", type=Path, default=DEFAULT_AIRFLOW_HOME)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="Celery workers (default 2)")
    options = parser.parse_args(arguments)
    return up(airflow_home=options.airflow_home.resolve(), workers=options.workers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
