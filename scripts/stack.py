"""`make up` / `make status` / `make down`: the local stack on 127.0.0.1, supervised, and stopping every process of it.

up: the embedded MongoDB-wire server (unless MONGO_URI is set), Airflow 3's components (API server,
scheduler, DAG processor, triggerer; LocalExecutor, SQLite under .airflow/) and, over a local
tracking store, the MLflow UI behind MLflow's basic-auth login. ``stack.py up --airflow-home DIR``
puts Airflow elsewhere; ``AIRFLOW__API__PORT`` and ``mlflow.ui_url`` choose the ports.

Supervision (:func:`start`, for any list of :class:`Component`): a detached supervisor starts the
components in order, each once the one before it is healthy, restarts one that exits (after 1 s,
doubling to 30 s) and brings the whole stack down when one exits more than 5 times in 10 minutes.
It writes every component's state to ``health.json`` in the state folder; ``stack.py status``
prints it.

Every process started carries a marker in its environment, so down finds all of them, task
processes in their own process groups and orphans included; it stops the supervisor first, sends
SIGTERM, then SIGKILL to what is left after a grace period, and returns once none is alive.
Secrets reach the children through their environment, never their command line; what is printed
is redacted; files are created readable by their owner only.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import psutil

from pipeline.redact import MIN_SECRET, configured_secrets, hide, redact, secrets_in
from pipeline.services import (
    airflow_environment,
    embedded_uri_file,
    free_port,
    local_uri,
    mongo_server_command,
    owner_only,
    private_folder,
    private_log,
    running_embedded_uri,
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
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
HEALTH_SCHEMES = ("http://", "https://", "tcp://")
READY = ("healthy", "completed")  # what the next component waits for; "completed": a ``once`` component's exit 0
TICK_S = 0.5  # how often the supervisor looks at every component
PROBE_TIMEOUT_S = 2.0
HEALTHY_PROBE_S = 15.0  # a healthy component is checked this often: each check is a line in its log
TAIL_LINES = 15
LOCAL_PARALLELISM = max(4, 2 * (os.cpu_count() or 1))  # task processes at once under `make up`
MIGRATE_TIMEOUT_S = 600.0  # a first migration of Airflow's database, on shared cores
SIGNAL_NAMES = {number.value: number.name for number in signal.Signals}
# Health checks go straight to the component, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Component:
    """One process of a stack, like a compose service.

    ``env`` is the process's complete environment (the supervisor adds the stack's marker).
    ``health``: ``http(s)://...`` is healthy when it answers with any status below 500 (a login's
    401 included; the scheduler answers 503 while it does not heartbeat), ``tcp://host:port`` when
    it accepts a connection, None while it is alive. ``user``: run as this system user and its
    group (which needs root); None: as we are. ``once``: a one-off step (a migration), like a
    compose service others wait for with ``service_completed_successfully``: it must exit 0
    within ``ready_timeout_s``, and is not restarted.
    """

    name: str
    command: list[str]
    env: dict[str, str]
    health: str | None = None
    ready_timeout_s: float = 120.0
    user: str | None = None
    once: bool = False

    def __post_init__(self) -> None:
        if self.health is not None and not self.health.startswith(HEALTH_SCHEMES):
            raise ValueError(f"{self.name}: health must start with http://, https:// or tcp://: {redact(self.health)}")


@dataclass(frozen=True)
class RestartPolicy:
    """compose's ``restart: unless-stopped``, with a limit.

    More than ``limit`` exits of one component within ``window_s`` bring the whole stack down.
    """

    limit: int = 5
    window_s: float = 600.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay(self, exits: int) -> float:
        """The wait before restarting a component that exited ``exits`` times within the window: doubling, capped."""
        return min(self.first_delay_s * 2 ** (exits - 1), self.max_delay_s)


def state_dir() -> Path:
    return private_folder(get_settings().storage.local_root / "stack")


def up(airflow_home: Path = DEFAULT_AIRFLOW_HOME) -> int:
    """`make up`: MongoDB (unless MONGO_URI), Airflow's components and the MLflow UI, supervised; their logins."""
    owner_only()  # databases, logs and credentials of every child: owner only
    settings = get_settings()
    if _already_running():
        return 1
    private_folder(settings.storage.local_root)
    private_folder(airflow_home)
    components = []
    uri = settings.mongo.uri or running_embedded_uri(settings.storage.local_root / "mongo")
    if uri is None:
        mongo, uri = mongo_component(settings.storage.local_root / "mongo")
        components.append(mongo)
    password_file = airflow_credentials(airflow_home)
    port = int(os.environ.get("AIRFLOW__API__PORT", DEFAULT_AIRFLOW_PORT))
    env = airflow_env(settings, airflow_home, uri, port, password_file)
    components += airflow_components(env, port)
    logins = [("Airflow", f"http://127.0.0.1:{port}", password_file)]
    ui = mlflow_ui(settings, state_dir())
    if ui is not None:
        command, mlflow_env, credentials_file = ui
        url = f"http://127.0.0.1:{mlflow_port(settings)}"
        components.append(Component("mlflow", command, {**env, **mlflow_env}, health=f"{url}/health"))
        logins.append(("MLflow", url, credentials_file))
    if (code := start(components)) != 0:
        return code
    for name, url, login_file in logins:
        print(f"{name:8} {url}  (login {ADMIN}, password in {login_file})")
    if ui is None:
        print(f"MLflow   {redact(settings.mlflow_uri)}  (remote tracking server: no local UI started)")
    print(f"MongoDB  {redact(uri)}")
    print("Health: make status. Stop everything with: make down")
    return 0


def mongo_component(storage: Path) -> tuple[Component, str]:
    """The embedded MongoDB-wire server over ``storage`` as a component, and its URI.

    The URI is written beside the storage at once, so that the CLI finds the server: it pings
    a URI from there before using it.
    """
    private_folder(storage)
    port = free_port()
    uri = local_uri(port)
    embedded_uri_file(storage).write_text(uri)
    return Component("mongo", mongo_server_command(storage, port), dict(os.environ), f"tcp://127.0.0.1:{port}"), uri


def airflow_env(settings: Settings, airflow_home: Path, mongo_uri: str, port: int, password_file: Path) -> dict:
    """The environment of every Airflow component: the project's DAGs on SQLite, on 127.0.0.1.

    What ``airflow standalone`` set up itself is set here: the LocalExecutor, and the simple auth
    manager with its admin user, whose password file :func:`airflow_credentials` writes.
    """
    return {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT,
            airflow_home=airflow_home,
            mongo_uri=mongo_uri,
            database=settings.mongo.database,
            conn_id=settings.mongo.airflow_conn_id,
        ),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the environment's tools first, by name
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Airflow's default, 32, keeps 32 idle worker processes (about 270 MB each) for a 2-core machine
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", str(LOCAL_PARALLELISM)),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",  # user admin, role admin
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # where task processes report to: the API server above (Airflow's default assumes port 8080)
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # the scheduler's /health, the supervisor's check of it
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
    }


def airflow_components(env: dict[str, str], port: int) -> list[Component]:
    """``airflow db migrate`` once, then Airflow's API server, scheduler, DAG processor and triggerer.

    The migration (compose's airflow-init) also writes ``airflow.cfg`` on a first run, with
    generated keys (the JWT secret among them) that every component after it must share.
    """
    airflow = str(BIN / "airflow")
    scheduler_health = f"http://127.0.0.1:{env['AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT']}/health"
    return [
        Component("airflow-migrate", [airflow, "db", "migrate"], env, ready_timeout_s=MIGRATE_TIMEOUT_S, once=True),
        Component("api-server", [airflow, "api-server"], env, health=f"http://127.0.0.1:{port}/api/v2/version"),
        Component("scheduler", [airflow, "scheduler"], env, health=scheduler_health),
        Component("dag-processor", [airflow, "dag-processor"], env),
        Component("triggerer", [airflow, "triggerer"], env),
    ]


def start(components: list[Component], *, name: str = "stack", policy: RestartPolicy = RestartPolicy()) -> int:
    """Start ``components`` under a detached supervisor; 0 once every one is healthy, else 1 with the stack down.

    Each component starts once the one before it is healthy (compose's ``depends_on:
    service_healthy``). The status table is printed either way: on failure it names the
    component that failed and shows the tail of its log.
    """
    _check_names(components, name)
    if _already_running():
        return 1
    state = begin()
    _health_file().unlink(missing_ok=True)  # the last stack's: what follows waits for this one's
    ready = False
    try:
        ready = _wait_until_up(_start_supervisor(state, name, components, policy))
    finally:
        if not ready:  # never healthy, a supervisor that died, or ^C: leave nothing running
            _halt(_read_state() or state, GRACE_S)
    health = _read_health()
    _report(health)
    if health is None:  # the supervisor died before its first report: its own log says why
        _print_tail(_log_path(name))
    return 0 if ready else 1


def status() -> int:
    """``stack.py status``: a row per component; 0 only if the supervisor runs and every component is healthy."""
    return 0 if _report(_read_health()) else 1


def begin() -> dict:
    """A new stack's state, saved before anything starts (so that down finds a half-started stack)."""
    state = {"id": uuid.uuid4().hex, "pids": {}}
    os.environ[MARKER] = state["id"]  # inherited by every child, grandchild and task process
    _save_state(state)
    return state


def launch(state: dict, name: str, command: list, env: dict) -> None:
    """Start one component, unsupervised, as :func:`_spawn` does, and record it."""
    process, _ = _spawn(name, command, env)
    record(state, name, process.pid)


def _spawn(name: str, command: list, env: dict, user: str | None = None) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Start a component in a session of its own, its output redacted into ``NAME.log``; (process, log writer).

    The output goes through ``stack.py log``: Airflow's LocalExecutor echoes task logs to the
    scheduler's output unmasked (the task log files are masked), and libraries print URIs.
    """
    identity = _identity(user)
    with private_log(_log_path(name)) as log:  # the children write through their own copies
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
            **identity,
        )
    finally:
        writer.stdin.close()
    return process, writer


def _identity(user: str | None) -> dict:
    """Popen's arguments to run as ``user`` with its own group only: a user id alone would keep ours (root's)."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


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
    """Save a component's PID, with its start time: see :func:`_session_is_ours`."""
    state["pids"][name] = pid
    state.setdefault("started", {})[name] = psutil.Process(pid).create_time()  # our child: not reaped yet
    _save_state(state)


def _check_names(components: list[Component], name: str) -> None:
    """Names name the logs and the rows of `status`: unique, and none the stack's own (its supervisor's log)."""
    names = [component.name for component in components]
    if len({*names, name}) != len(names) + 1:
        raise ValueError(f"component names must be unique and differ from the stack's name {name!r}: {names}")


def _already_running() -> bool:
    """Say so if a stack is running: a second one would fight it over the ports and the state."""
    state = _read_state()
    if state and (running := _members(state)):
        print(f"the stack is already running ({len(running)} processes); stop it first with: make down")
        return True
    return False


def _start_supervisor(state: dict, name: str, components: list[Component], policy: RestartPolicy) -> subprocess.Popen:
    """``stack.py supervise``, detached (a session of its own, outliving us), given the components through a pipe.

    Their environments hold secrets: a pipe keeps them off command lines and the disk. Its own
    messages go to ``NAME.log``.
    """
    with private_log(_log_path(name)) as log:
        supervisor = subprocess.Popen(
            [sys.executable, __file__, "supervise"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
    state["supervisor"] = supervisor.pid  # saved before the hand-over: from then on the supervisor saves the state
    record(state, name, supervisor.pid)
    spec = {"state": state, "name": name, "components": [asdict(c) for c in components], "policy": asdict(policy)}
    with supervisor.stdin:
        supervisor.stdin.write(json.dumps(spec).encode())
    return supervisor


def _wait_until_up(supervisor: subprocess.Popen) -> bool:
    """True once the supervisor reports every component healthy; False if it exits first (it gave up)."""
    while supervisor.poll() is None:
        if (health := _read_health()) and health["phase"] == "up":
            return True
        time.sleep(0.3)
    return False


def supervise_command() -> int:
    """``stack.py supervise`` (started by :func:`start`): read the components from standard input and supervise them."""
    owner_only()  # whatever the components write: owner only
    spec = json.load(sys.stdin)
    components = [Component(**component) for component in spec["components"]]
    return Supervisor(spec["state"], spec["name"], components, RestartPolicy(**spec["policy"])).run()


class GiveUp(Exception):
    """A component the stack cannot do without failed: the supervisor brings the stack down."""

    def __init__(self, watched: Watched, reason: str) -> None:
        super().__init__(reason)
        self.watched = watched


@dataclass
class Watched:
    """A component under supervision: its current process, and what `status` shows of it."""

    component: Component
    state: str = "waiting"  # until the components before it are healthy
    process: subprocess.Popen | None = None
    launched: float = 0.0  # wall-clock time of the latest start
    answered: bool = False  # healthy at least once since then
    restarts: int = 0
    last_exit: int | None = None
    exits: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, exit code) within the window
    restart_at: float = 0.0
    probed: float = 0.0  # monotonic time of the latest health check

    def row(self) -> dict:
        return {
            "name": self.component.name,
            "state": self.state,
            "pid": self.process.pid if self.process else None,
            "started": self.launched,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "log": str(_log_path(self.component.name)),
        }


class Supervisor:
    """The detached supervisor: starts the components in order, restarts those that exit, publishes their health."""

    def __init__(self, state: dict, name: str, components: list[Component], policy: RestartPolicy) -> None:
        self.state, self.policy = state, policy
        self.watched = [Watched(component) for component in components]
        self.writers: list[subprocess.Popen] = []  # log writers, reaped once their component has exited
        self.health = {"id": state["id"], "name": name, "supervisor": os.getpid(), "started": time.time(),
                       "phase": "starting", "reason": None, "failed": None}  # fmt: skip
        self.published = ""

    def run(self) -> int:
        """Start, then watch until killed (by down); 1 if it had to bring the stack down."""
        try:
            for current in self.watched:
                if current.component.health and _healthy(current.component.health):  # its check would be a lie
                    raise GiveUp(current, f"found {redact(current.component.health)} answering before it started")
                self._launch(current)
                while current.state not in READY:
                    self._watch()
                    if current.state == "unhealthy":
                        raise GiveUp(current, _not_ready(current.component))
            self.health["phase"] = "up"
            _note("every component is healthy")
            while True:
                self._watch()
        except GiveUp as give_up:
            self._bring_down(give_up)
            return 1

    def _watch(self) -> None:
        """One look at every started component: restart those due, record exits, probe the live; then publish."""
        now = time.monotonic()
        for watched in self.watched:
            if watched.state in ("waiting", "completed"):
                continue
            if watched.process is None:
                if now >= watched.restart_at:
                    watched.restarts += 1
                    self._launch(watched)
            elif (code := watched.process.poll()) is not None:
                self._exited(watched, code, now)
            else:
                self._probe(watched)
        self.writers = [writer for writer in self.writers if writer.poll() is None]
        self._publish()
        time.sleep(TICK_S)

    def _launch(self, watched: Watched) -> None:
        """Start (or restart) a component, with the stack's marker, and save its PID for down."""
        component = watched.component
        try:
            environment = {**component.env, MARKER: self.state["id"]}  # so that down finds it whatever it does
            watched.process, writer = _spawn(component.name, component.command, environment, component.user)
        except (OSError, KeyError) as error:  # no such command or user: a retry would not do better
            raise GiveUp(watched, f"could not be started: {error}") from error
        self.writers.append(writer)
        watched.state, watched.launched, watched.answered = "starting", time.time(), False
        record(self.state, component.name, watched.process.pid)
        _note(f"{component.name} started (pid {watched.process.pid})")

    def _exited(self, watched: Watched, code: int, now: float) -> None:
        """Record an exit, kill what the component left behind, and schedule its restart, or give up on a crash loop."""
        for leftover in _family({watched.process.pid}, None):  # as a container's processes go with it
            _signal(leftover, signal.SIGKILL)
        watched.process, watched.last_exit = None, code
        if watched.component.once:
            self._finished(watched, code)
            return
        watched.exits = [(t, c) for t, c in watched.exits if now - t < self.policy.window_s] + [(now, code)]
        if len(watched.exits) > self.policy.limit:
            codes = ", ".join(_exit_name(c) for _, c in watched.exits)
            raise GiveUp(watched, f"exited {len(watched.exits)} times within {_duration(self.policy.window_s)} "
                                  f"(exit codes {codes})")  # fmt: skip
        delay = self.policy.delay(len(watched.exits))
        watched.state, watched.restart_at = "restarting", now + delay
        _note(f"{watched.component.name} exited ({_exit_name(code)}); restarting in {delay:g} s")

    def _finished(self, watched: Watched, code: int) -> None:
        """A ``once`` component's exit: completed, or the reason to bring the stack down."""
        if code != 0:
            raise GiveUp(watched, f"failed ({_exit_name(code)})")
        watched.state = "completed"
        _note(f"{watched.component.name} completed")

    def _probe(self, watched: Watched) -> None:
        """healthy if the check passes; starting until the ready timeout; unhealthy after it, or once it was healthy.

        A ``once`` component is never healthy: it runs until it completes.
        """
        component, now = watched.component, time.monotonic()
        if watched.state == "healthy" and now - watched.probed < HEALTHY_PROBE_S:
            return
        watched.probed = now
        if not component.once and _healthy(component.health):
            watched.answered, state = True, "healthy"
        elif watched.answered or time.time() - watched.launched > component.ready_timeout_s:
            state = "unhealthy"
        else:
            state = "starting"
        if state != watched.state:
            _note(f"{component.name} {state}")
        watched.state = state

    def _bring_down(self, give_up: GiveUp) -> None:
        """Stop every process of the stack, saying why first: `status` shows the reason, the component and its log."""
        failed = give_up.watched
        self.health.update(phase="down", reason=f"{failed.component.name} {give_up}", failed=failed.component.name)
        _note(f"bringing the stack down: {self.health['reason']}")
        self._publish()
        stop(self.state, GRACE_S)
        for watched in self.watched:
            watched.process, watched.state = None, "failed" if watched is failed else "stopped"
        self._publish()

    def _publish(self) -> None:
        """Write the states to ``health.json`` for `status`, when they changed."""
        text = json.dumps({**self.health, "components": [watched.row() for watched in self.watched]})
        if text != self.published:
            write_private(_health_file(), text)
            self.published = text


def _healthy(health: str | None) -> bool:
    """Whether a live component passes its health check (see :class:`Component`)."""
    if health is None:
        return True
    address = urlsplit(health)
    try:
        if address.scheme == "tcp":
            socket.create_connection((address.hostname, address.port), timeout=PROBE_TIMEOUT_S).close()
        else:
            DIRECT.open(health, timeout=PROBE_TIMEOUT_S).close()
        return True
    except urllib.error.HTTPError as error:  # answering: behind a login (401), or not ready (503)
        return error.code < 500
    except OSError:
        return False


def _not_ready(component: Component) -> str:
    """Why a component that started holds the others back."""
    if component.once:
        return f"did not complete within {component.ready_timeout_s:g} s"
    return f"was not healthy {component.ready_timeout_s:g} s after it started ({redact(component.health or '')})"


def _note(message: str) -> None:
    """A line of the supervisor's log."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def _report(health: dict | None) -> bool:
    """Print the status table, what went wrong above it and the failed component's log below; True if all is healthy."""
    if health is None:
        print("the stack is not running (start it with: make up)")
        return False
    watching = _ours(health["supervisor"], health["id"]) is not None
    if health["phase"] == "down":
        print(f"{health['name']} brought down by its supervisor: {health['reason']}")
    elif not watching:
        print(f"{health['name']}: its supervisor (pid {health['supervisor']}) is not running, nothing restarts "
              "what exits: make down, then make up")  # fmt: skip
    else:
        print(f"{health['name']} {health['phase']}, supervisor pid {health['supervisor']}")
    now = time.time()
    rows = [("component", "state", "pid", "uptime", "restarts", "last exit", "log")]
    for row in health["components"]:
        uptime = _duration(now - row["started"]) if row["pid"] else "-"
        rows.append((row["name"], row["state"], str(row["pid"] or "-"), uptime, str(row["restarts"]),
                     _exit_name(row["last_exit"]), row["log"]))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if health["failed"]:
        _print_tail(_log_path(health["failed"]))
    states = {row["state"] for row in health["components"]}
    return watching and health["phase"] == "up" and states <= set(READY)


def _print_tail(path: Path) -> None:
    """The last lines of a log (redacted as it was written), indented."""
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 16384))  # a log may be large: its end is enough
            lines = file.read().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    except OSError as error:
        lines = [f"(unreadable: {error.strerror})"]
    print(f"last lines of {path}:")
    for line in lines:
        print(f"    {line}")


def _duration(seconds: float) -> str:
    """``42s``, ``5m07s``, ``3h05m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _exit_name(code: int | None) -> str:
    """An exit code as `status` shows it: ``-`` for none, the signal's name for a signal, else the number."""
    if code is None:
        return "-"
    return SIGNAL_NAMES.get(-code, str(code)) if code < 0 else str(code)


def down(grace_s: float = GRACE_S) -> int:
    state = _read_state()
    if state is None:
        print("nothing to stop")
        return 0
    stopped, killed, survivors = _halt(state, grace_s)
    if survivors:
        print(f"could not stop {len(survivors)} processes: {', '.join(str(p.pid) for p in survivors)}")
        return 1
    _state_file().unlink(missing_ok=True)
    _health_file().unlink(missing_ok=True)
    forced = f" ({killed} still running after {grace_s:.0f} s: killed)" if killed else ""
    print(f"stopped {stopped} processes{forced}")
    return 0


def _halt(state: dict, grace_s: float) -> tuple[int, int, list[psutil.Process]]:
    """:func:`stop`, after the supervisor: it would restart what exits. Its kill counts as stopped."""
    supervisor = _ours(state.get("supervisor"), state["id"])
    if supervisor is not None:
        _signal(supervisor, signal.SIGKILL)  # it holds nothing that needs a clean exit
        deadline = time.monotonic() + KILL_WAIT_S
        while _alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
    stopped, killed, survivors = stop(state, grace_s)
    return stopped + (supervisor is not None), killed, survivors


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
        write_private(password_file, json.dumps({ADMIN: _password()}) + "\n")
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
        write_private(credentials_file, json.dumps({ADMIN: _password(), "secret_key": secrets.token_hex(32)}) + "\n")
    credentials_file.chmod(0o600)
    credentials = json.loads(credentials_file.read_text())
    config = folder / "mlflow_auth.ini"
    write_private(
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
        str(mlflow_port(settings)),
        "--workers",
        "1",  # one local user: one worker (each is a full MLflow server in memory)
        # runs logged through this server keep their artifacts beside the database, not in the checkout
        "--artifacts-destination",
        (settings.storage.local_root / "mlartifacts").as_uri(),
    ]
    environment = {
        "MLFLOW_BACKEND_STORE_URI": settings.mlflow_uri,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials[ADMIN],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials["secret_key"],
    }
    return command, environment, credentials_file


def mlflow_port(settings: Settings) -> int:
    """The port of ``mlflow.ui_url``, where the Detections view links to."""
    return urlsplit(settings.mlflow.ui_url or "").port or DEFAULT_MLFLOW_PORT


def _members(state: dict) -> list[psutil.Process]:
    """Every live process of the stack: those with its marker, members of the sessions it started, their descendants."""
    sessions = {pid for name, pid in state["pids"].items() if _session_is_ours(state, name)}
    return _family(sessions, state["id"])


def _family(sessions: set[int], marker: str | None) -> list[psutil.Process]:
    """Live processes in ``sessions`` or with ``marker`` in their environment, and their descendants; never this one."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            marked = marker is not None and process.environ().get(MARKER) == marker
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


def _session_is_ours(state: dict, name: str) -> bool:
    """A recorded session leader's session is ours unless its PID now belongs to an unrelated process.

    Told by the start time recorded with it, not by the marker: Airflow's components overwrite
    their environment, marker included, with their process title (setproctitle).
    """
    try:
        process = psutil.Process(state["pids"][name])
        if (started := state.get("started", {}).get(name)) is not None:
            return abs(process.create_time() - started) < 0.01
        return state["id"] is None or process.environ().get(MARKER) == state["id"]  # a pids.json of an older `make up`
    except psutil.NoSuchProcess:
        return True  # Linux does not reuse the PID of a session that still has members
    except psutil.Error:
        return False


def _ours(pid: int | None, stack_id: str) -> psutil.Process | None:
    """The live process ``pid`` if it belongs to the stack ``stack_id``, else None."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        return process if process.environ().get(MARKER) == stack_id and _alive(process) else None
    except psutil.Error:
        return None


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


def _health_file() -> Path:
    return state_dir() / "health.json"


def _log_path(name: str) -> Path:
    return state_dir() / f"{name}.log"


def _read_state() -> dict | None:
    if not _state_file().exists():
        return None
    state = json.loads(_state_file().read_text())
    return state if "id" in state else {"id": None, "pids": state}  # a pids.json of an older `make up`


def _read_health() -> dict | None:
    try:
        return json.loads(_health_file().read_text())
    except FileNotFoundError:
        return None


def _save_state(state: dict) -> None:
    write_private(_state_file(), json.dumps(state))


def write_private(path: Path, text: str) -> None:
    """Write ``path`` (0600) whole: `status` and `down` may read it while the supervisor rewrites it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, path)


def _password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(20))


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    begin_up = commands.add_parser("up", help="start the stack and wait until every component is healthy")
    begin_up.add_argument("--airflow-home", type=Path, default=DEFAULT_AIRFLOW_HOME)
    commands.add_parser("status", help="every component's state; exit 0 only if all are healthy")
    halt = commands.add_parser("down", help="stop every process of the stack")
    halt.add_argument("--grace-s", type=float, default=GRACE_S, help="wait this long after SIGTERM, then SIGKILL")
    commands.add_parser("log", help="(internal) copy standard input to standard output, secrets masked")
    commands.add_parser("supervise", help="(internal) supervise the components given on standard input")
    options = parser.parse_args(arguments)
    if options.command == "up":
        return up(options.airflow_home.resolve())
    if options.command == "down":
        return down(options.grace_s)
    return {"status": status, "log": log_command, "supervise": supervise_command}[options.command]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
