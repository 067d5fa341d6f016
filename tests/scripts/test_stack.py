"""`make up` / `make status` / `make down` (scripts/stack.py): supervision, nothing survives down, no secret leaks."""

import base64
import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote_plus

import psutil
import pytest
import stack
from PIL import Image

from pipeline.services import free_port
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare, train
from pipeline.store import INTAKE, VERDICTS, ResultStore
from pipeline.synthetic import drop_incoming
from tests.test_services import PASSWORD, mongo_with_login, with_login

MLFLOW_SECRET = "tr4cking-s3cret"
STACK = [sys.executable, str(PROJECT_ROOT / "scripts" / "stack.py")]
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
# A component shaped like `airflow standalone` at its worst: children that ignore SIGTERM, one in
# its own process group (as Airflow puts task processes), one with a scrubbed environment, and a
# daemon in a session of its own whose parent has exited. It prints their PIDs to its log.
COMPONENT = f"""
import json, os, subprocess, sys, time
stubborn = [sys.executable, "-c", {STUBBORN!r}]
task = subprocess.Popen(stubborn, process_group=0)
scrubbed = subprocess.Popen(stubborn, env={{"PATH": os.environ["PATH"]}}, process_group=0)
daemonize = ("import subprocess as s, sys; "
             "print(s.Popen(sys.argv[1:], start_new_session=True, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)")
launcher = subprocess.run([sys.executable, "-c", daemonize, *stubborn], capture_output=True, text=True, check=True)
print(json.dumps({{"task": task.pid, "scrubbed": scrubbed.pid, "daemon": int(launcher.stdout)}}), flush=True)
time.sleep(600)
"""
# Starts one component the way `make up` starts each (NAME COMMAND_JSON), then exits as `make up` does.
LAUNCH = """
import json, os, sys
import stack
stack.owner_only()
stack.launch(stack.begin(), sys.argv[1], json.loads(sys.argv[2]), dict(os.environ))
"""


def launch(name: str, command: list[str], settings, environment: dict | None = None) -> dict:
    """Start one component as `make up` does, from a process that then exits; the stack's saved state."""
    env = {**os.environ, **(environment or {}), "PYTHONPATH": str(PROJECT_ROOT / "scripts")}
    subprocess.run([sys.executable, "-c", LAUNCH, name, json.dumps(command)], env=env, check=True, timeout=60)
    return json.loads((settings.storage.local_root / "stack" / "pids.json").read_text())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def kill_leftovers(stack_id: str) -> None:
    """Clean up after a failed test: the processes this test started (they carry its marker), by PID."""
    for process in marked(stack_id):
        os.kill(process.pid, signal.SIGKILL)


def test_down_stops_every_process_including_stubborn_orphans(settings):
    state = launch("component", [sys.executable, "-c", COMPONENT], settings)
    log = settings.storage.local_root / "stack" / "component.log"
    try:
        children = wait_for(lambda: log.read_text().strip() and json.loads(log.read_text()), 30, "the PIDs")
        pids = [state["pids"]["component"], *children.values()]
        assert all(alive(pid) for pid in pids)
        assert os.getpgid(children["task"]) != os.getpgid(state["pids"]["component"])
        assert os.getsid(children["daemon"]) != state["pids"]["component"]
        started = time.monotonic()
        down = subprocess.run([*STACK, "down", "--grace-s", "1"], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert [pid for pid in pids if alive(pid)] == []  # when down returns, everything has exited
        assert "stopped 5 processes" in down.stdout and "killed" in down.stdout  # 5: with the log writer
        assert time.monotonic() - started < 30
        assert not (settings.storage.local_root / "stack" / "pids.json").exists()
    finally:
        kill_leftovers(state["id"])


def component(name: str, code: str, **options) -> stack.Component:
    """A tiny Python component: ``code`` run by this interpreter, in this process's environment."""
    return stack.Component(name, [sys.executable, "-c", code], dict(os.environ), **options)


def web(name: str, port: int, scheme: str = "http") -> stack.Component:
    """An HTTP server on ``port``, checked by ``scheme`` (http, or tcp for a connection only)."""
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return stack.Component(name, command, dict(os.environ), health=f"{scheme}://127.0.0.1:{port}/")


def health(settings) -> dict:
    return json.loads((settings.storage.local_root / "stack" / "health.json").read_text())


def row(settings, name: str) -> dict:
    return next(row for row in health(settings)["components"] if row["name"] == name)


def status_of(capsys) -> tuple[int, str]:
    """`stack.py status` in this process: its exit code and output."""
    capsys.readouterr()
    code = stack.status()
    return code, capsys.readouterr().out


@pytest.fixture
def supervised(settings, monkeypatch):
    """For stacks started from this process (begin() marks it): afterwards down, then the marker's leftovers."""
    monkeypatch.delenv(stack.MARKER, raising=False)
    yield
    subprocess.run([*STACK, "down", "--grace-s", "1"], capture_output=True, timeout=120)
    if stack_id := os.environ.get(stack.MARKER):
        kill_leftovers(stack_id)


def test_a_component_killed_with_sigkill_is_restarted_and_healthy_again(settings, supervised, monkeypatch, capsys):
    monkeypatch.setenv("SERVICE_TOKEN", "t0ken-value")
    talk = "import os, time; print('token', os.environ['SERVICE_TOKEN'], flush=True); time.sleep(600)"
    components = [component("init", "print('initialised')", once=True), web("web", free_port()),
                  web("tcp", free_port(), scheme="tcp"), component("talk", talk)]  # fmt: skip
    assert stack.start(components) == 0
    assert capsys.readouterr().out.count(" healthy ") == 3
    killed = row(settings, "web")["pid"]
    os.kill(killed, signal.SIGKILL)

    def restarted() -> dict | None:
        again = row(settings, "web")
        return again if again["state"] == "healthy" and again["restarts"] else None

    web_row = wait_for(restarted, 30, "the restart")
    assert (web_row["restarts"], web_row["last_exit"]) == (1, -signal.SIGKILL) and web_row["pid"] != killed
    code, out = status_of(capsys)
    assert code == 0, out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["web"][1:2] + lines["web"][4:6] == ["healthy", "1", "SIGKILL"]
    assert lines["init"][1:6] == ["completed", "-", "-", "0", "0"] and lines["tcp"][1] == lines["talk"][1] == "healthy"
    folder = settings.storage.local_root / "stack"
    assert (folder / "talk.log").read_text() == "token ***\n"
    supervisor = psutil.Process(health(settings)["supervisor"])
    texts = [" ".join(supervisor.cmdline()), *(p.read_text() for p in folder.iterdir())]  # specs went by a pipe
    assert not [text for text in texts if "t0ken-value" in text]
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}


def test_a_component_that_keeps_crashing_brings_the_stack_down_and_status_says_why(settings, supervised, capsys):
    crash = "import sys, time; print('flaky gives up', flush=True); time.sleep(3); sys.exit(3)"
    components = [component("steady", "import time; time.sleep(600)"), component("flaky", crash)]
    assert stack.start(components, policy=stack.RestartPolicy(limit=2, first_delay_s=0.2)) == 0
    stack_id = os.environ[stack.MARKER]
    wait_for(lambda: health(settings)["phase"] == "down" and not marked(stack_id), 60, "the stack to be brought down")
    code, out = status_of(capsys)
    assert code == 1
    assert "brought down by its supervisor: flaky exited 3 times within 10m00s (exit codes 3, 3, 3)" in out
    assert {line.split()[0]: line.split()[1] for line in out.splitlines()[2:4]} == {"steady": "stopped",
                                                                                     "flaky": "failed"}  # fmt: skip
    assert out.count("flaky gives up") >= 3  # the tail of its log
    time.sleep(1)
    assert marked(stack_id) == []  # the supervisor too: nothing is restarted


def test_a_component_that_never_becomes_healthy_fails_start_and_leaves_nothing_running(settings, supervised, capsys):
    deaf = component("deaf", "import time; print('listening nowhere', flush=True); time.sleep(600)",
                     health=f"http://127.0.0.1:{free_port()}/", ready_timeout_s=2)  # fmt: skip
    started = time.monotonic()
    assert stack.start([component("first", "import time; time.sleep(600)"), deaf]) == 1
    assert time.monotonic() - started < 30
    out = capsys.readouterr().out
    assert "deaf was not healthy 2 s after it started (http://127.0.0.1:" in out
    assert "listening nowhere" in out  # the tail of its log
    assert marked(os.environ[stack.MARKER]) == []


def test_a_component_whose_address_answers_already_is_not_started(settings, supervised, capsys):
    port = free_port()
    squatter = subprocess.Popen(web("squatter", port).command, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: request(f"http://127.0.0.1:{port}/")[0], 30, "the other server")
        assert stack.start([web("web", port)]) == 1
    finally:
        squatter.kill()
        squatter.wait()
    assert f"web found http://127.0.0.1:{port}/ answering before it started" in capsys.readouterr().out
    assert marked(os.environ[stack.MARKER]) == []


def test_down_during_supervision_stops_everything_and_nothing_is_restarted(settings, supervised):
    # Airflow's components set their process title, which overwrites their environment and so the marker.
    titled = component("titled", "import setproctitle, time; setproctitle.setproctitle('titled'); time.sleep(600)")
    assert stack.start([component("component", COMPONENT), web("web", free_port()), titled]) == 0
    stack_id, log = os.environ[stack.MARKER], settings.storage.local_root / "stack" / "component.log"
    children = wait_for(lambda: log.read_text().strip() and json.loads(log.read_text()), 30, "the PIDs")
    pids = [health(settings)["supervisor"], *(r["pid"] for r in health(settings)["components"]), *children.values()]
    down = subprocess.run([*STACK, "down", "--grace-s", "1"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 10 processes" in down.stdout  # supervisor, 3 components, 3 children, 3 log writers
    assert [pid for pid in pids if alive(pid)] == []
    time.sleep(2)  # a supervisor still at work would have restarted a component by now
    assert marked(stack_id) == []
    assert not list((settings.storage.local_root / "stack").glob("*.json"))


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_component_runs_as_its_user_with_that_users_group_only(settings, supervised):
    nobody = pwd.getpwnam("nobody")
    ids = ["sh", "-c", "echo $(id -u) $(id -g) $(id -G); exec sleep 600"]  # the environment's Python may be root's
    assert stack.start([stack.Component("as-nobody", ids, dict(os.environ), user="nobody")]) == 0
    log = settings.storage.local_root / "stack" / "as-nobody.log"
    printed = wait_for(lambda: log.read_text().strip(), 30, "the ids")
    assert printed == f"{nobody.pw_uid} {nobody.pw_gid} {nobody.pw_gid}"  # no supplementary group of ours


def test_component_output_is_redacted_into_a_private_log(settings, monkeypatch):
    monkeypatch.setenv("MONGO_URI", "mongodb://mc:m0ngo-pw@127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("SERVICE_TOKEN", "t0ken-value")
    talk = "import os; print('db', os.environ['MONGO_URI']); print('token', os.environ['SERVICE_TOKEN']); print('done')"
    state = launch("talk", [sys.executable, "-c", talk], settings)
    log = settings.storage.local_root / "stack" / "talk.log"
    try:
        wait_for(lambda: not marked(state["id"]), 30, "the component and its log writer to finish")
    finally:
        kill_leftovers(state["id"])
    expected = ["db mongodb://mc:***@127.0.0.1:1/?directConnection=true", "token ***", "done"]
    assert log.read_text().splitlines() == expected
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_mlflow_ui_gets_secrets_by_environment_and_private_credentials(settings, tmp_path, monkeypatch):
    store_uri = "postgresql://mc:db-secret@127.0.0.1:5432/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    command, environment, credentials_file = stack.mlflow_ui(load_settings(), tmp_path)
    credentials = json.loads(credentials_file.read_text())
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert "--app-name" in command and command[command.index("--app-name") + 1] == "basic-auth"
    assert environment["MLFLOW_BACKEND_STORE_URI"] == store_uri
    assert environment["MLFLOW_AUTH_ADMIN_PASSWORD"] == credentials["admin"]
    for secret in ("db-secret", credentials["admin"], credentials["secret_key"]):
        assert secret not in " ".join(command)
    assert "db-secret" not in (tmp_path / "mlflow_auth.ini").read_text()
    assert stack.mlflow_ui(load_settings(), tmp_path)[1] == environment  # generated once, then reused
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://me:token@dagshub.com/me/repo.mlflow")
    assert stack.mlflow_ui(load_settings(), tmp_path) is None  # a remote server has its own UI


def test_airflow_password_is_generated_once_and_private(tmp_path):
    password_file = stack.airflow_credentials(tmp_path)
    first = json.loads(password_file.read_text())
    assert list(first) == ["admin"] and len(first["admin"]) >= 16
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert json.loads(stack.airflow_credentials(tmp_path).read_text()) == first


def request(url: str, *, method: str = "GET", body: dict | None = None, token: str | None = None, basic=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null") if "json" in answer.headers.get(
                "Content-Type", ""
            ) else None
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:  # not listening yet
        return 0, None


def marked(stack_id: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(stack.MARKER) == stack_id:
                found.append(process)
        except psutil.Error:
            continue
    return found


def start_stack(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STACK, "up", *arguments], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_mlflow_ui_requires_a_login(settings, monkeypatch):
    """The MLflow UI as `make up` starts it: basic-auth with the generated admin password, kept off command lines."""
    port = free_port()
    monkeypatch.setenv("MEDIACHECK_MLFLOW__UI_URL", f"http://127.0.0.1:{port}")
    folder = settings.storage.local_root / "stack"
    command, environment, credentials_file = stack.mlflow_ui(load_settings(), stack.state_dir())
    credentials = json.loads(credentials_file.read_text())
    stack_id = launch("mlflow", command, settings, environment)["id"]
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert wait_for(lambda: request(url)[0], 120, "the MLflow UI") == 401  # no login, no data
        assert request(url, basic=("admin", "wrong"))[0] == 401
        assert request(url, basic=("admin", credentials["admin"]))[0] == 200
        assert request(f"http://127.0.0.1:{port}/")[0] == 401
        command_lines = [" ".join(p.cmdline()) for p in marked(stack_id)]
        assert command_lines and not [line for line in command_lines if credentials["admin"] in line]
    finally:
        subprocess.run([*STACK, "down"], capture_output=True, timeout=120)
        kill_leftovers(stack_id)
    log = (folder / "mlflow.log").read_text()
    assert credentials["admin"] not in log and credentials["secret_key"] not in log
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}


@pytest.mark.slow
def test_real_stack(settings, tmp_path, monkeypatch):
    """`make up`, passwords in MONGO_URI and MLFLOW_TRACKING_URI: tasks log in, no secret shows, none outlives down."""
    airflow_port = free_port()
    monkeypatch.setenv("AIRFLOW__API__PORT", str(airflow_port))
    monkeypatch.setenv("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
    monkeypatch.setenv("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", str(free_port()))
    # A remote tracking server that is down: scoring fails on it, with its URL in MLflow's error.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:{MLFLOW_SECRET}@127.0.0.1:{free_port()}/")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    root, airflow_home, incoming = settings.storage.root, tmp_path / "airflow", tmp_path / "incoming"
    incoming.mkdir()
    Image.new("RGB", (64, 64), "gray").save(incoming / "photo.jpg")
    processes: list[psutil.Process] = []
    with mongo_with_login(tmp_path / "mongo") as server:
        monkeypatch.setenv("MONGO_URI", with_login(server))  # no authSource: the login lives in admin
        try:
            up = start_stack("--airflow-home", str(airflow_home))
            assert up.returncode == 0, up.stdout + up.stderr
            checked = subprocess.run([*STACK, "status"], capture_output=True, text=True, timeout=60)
            assert checked.returncode == 0, checked.stdout  # every component healthy
            assert "mc:***@127.0.0.1" in up.stdout and "http://me:***@127.0.0.1" in up.stdout
            state = json.loads((root / "stack" / "pids.json").read_text())
            airflow_password = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())

            api = f"http://127.0.0.1:{airflow_port}"
            token = request(
                f"{api}/auth/token", method="POST", body={"username": "admin", "password": airflow_password["admin"]}
            )[1]["access_token"]
            wait_for(lambda: request(f"{api}/api/v2/dags/score_incoming", token=token)[0] == 200, 120, "DAG parsed")
            status, run = request(
                f"{api}/api/v2/dags/score_incoming/dagRuns", method="POST", body={"logical_date": None}, token=token
            )
            assert status == 200, run
            task_instances = f"{api}/api/v2/dags/score_incoming/dagRuns/{run['dag_run_id']}/taskInstances"

            def finished(task: str):
                answer = request(f"{task_instances}/{task}", token=token)[1] or {}
                return answer.get("state") in ("success", "failed", "up_for_retry") and answer["state"]

            # The listing reads MongoDB through the Airflow connection: it must log in.
            assert wait_for(lambda: finished("list_new"), 150, "the listing task") == "success"
            assert wait_for(lambda: finished("score_chunk/0"), 150, "the scoring task") in ("failed", "up_for_retry")
            processes = marked(state["id"])
            command_lines = [" ".join(p.cmdline()) for p in processes]
        finally:
            down = subprocess.run([*STACK, "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
    assert request(f"{api}/api/v2/version")[0] == 0  # the API server is gone too, though its title hides the marker
    assert len(processes) >= 5  # the supervisor, API server, scheduler, DAG processor, triggerer, and any task
    assert [p.pid for p in processes if alive(p.pid)] == []
    assert marked(state["id"]) == []

    score_log = "".join(p.read_text() for p in (airflow_home / "logs").rglob("task_id=score_chunk/**/*.log"))
    assert "http://me:***@127.0.0.1" in score_log  # MLflow's error was logged, its password masked
    secrets = [PASSWORD, quote_plus(PASSWORD), MLFLOW_SECRET, airflow_password["admin"]]
    logs = [p for p in [*(root / "stack").glob("*.log"), *(airflow_home / "logs").rglob("*")] if p.is_file()]
    outputs = [up.stdout, up.stderr, checked.stdout, down.stdout, *command_lines]
    for text in [*outputs, *(p.read_text(errors="replace") for p in logs)]:
        assert not [secret for secret in secrets if secret in text]
    leaky = [p for p in [*root.rglob("*"), *airflow_home.rglob("*")] if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert leaky == []  # databases, logs, credentials: owner only
    assert {"airflow.db", "logs"} <= {p.name for p in airflow_home.iterdir()}


@pytest.mark.slow
def test_a_drop_of_forty_media_into_the_running_stack_gets_one_verdict_each(settings, synthetic_source, tmp_path,
                                                                            mongo_uri, monkeypatch):  # fmt: skip
    """`make up` with a champion, then 40 media at once: every content gets its verdict, nothing dies."""
    airflow_port = free_port()
    for name, value in {"AIRFLOW__API__PORT": airflow_port, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": free_port(),
                        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": free_port(), "MONGO_URI": mongo_uri,
                        "MEDIACHECK_MONGO__DATABASE": "stack_load", "MEDIACHECK_SCORE__SETTLE_S": 2,
                        "MEDIACHECK_MLFLOW__UI_URL": f"http://127.0.0.1:{free_port()}"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    store = ResultStore.from_uri(mongo_uri, database="stack_load")
    prepare.run(load_settings(), store, str(synthetic_source.root))
    train.run(load_settings(), store)
    incoming = Path(load_settings().storage.incoming_uri.removeprefix("file://"))
    drops = [path for seed in range(5) for path in drop_incoming(tmp_path / "drops" / f"{seed}", seed=seed)]
    media = drops[:40]  # real and fake images and videos, a chart, and text named like a video
    contents = {hashlib.sha256(path.read_bytes()).hexdigest() for path in media}
    airflow_home = tmp_path / "airflow"
    try:
        up = start_stack("--airflow-home", str(airflow_home))
        assert up.returncode == 0, up.stdout + up.stderr
        for index, path in enumerate(media):
            shutil.copyfile(path, incoming / f"{index:02d}-{path.name}")
        settled = {"status": {"$in": ["scored", "failed", "linked"]}}  # each location: its verdict, or linked to one
        wait_for(lambda: store.count(VERDICTS) >= len(contents) and store.db[INTAKE].count_documents(settled)
                 >= len(media), 600, f"{len(contents)} verdicts for {len(media)} locations")  # fmt: skip
        status = subprocess.run([*STACK, "status"], capture_output=True, text=True, timeout=60)
        restarts = {row["name"]: row["restarts"] for row in health(settings)["components"]}
    finally:
        down = subprocess.run([*STACK, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert {v["_id"] for v in store.db[VERDICTS].find()} == contents
    linked = {d["_id"] for d in store.db[INTAKE].find(settled)}
    assert linked == {(incoming / f"{index:02d}-{path.name}").as_uri() for index, path in enumerate(media)}
    assert status.returncode == 0, status.stdout
    assert set(restarts.values()) == {0}, restarts  # no component had died when the last verdict came


def test_down_without_a_stack_does_nothing(settings):
    down = subprocess.run([*STACK, "down"], capture_output=True, text=True, timeout=60)
    assert (down.returncode, down.stdout.strip()) == (0, "nothing to stop")
