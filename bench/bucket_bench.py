"""Watched-bucket throughput: the running stack (`make up`) against `mediacheck score` on the same videos.

A detector is trained by the product's own stages on the demo's synthetic set (``configs/demo.yaml``,
as `make demo` trains it). N videos (the 40 shared clips; beyond 40, re-muxed copies whose
metadata makes each a distinct content) are scored twice into two databases of one embedded
MongoDB-wire server:

* **CLI**: ``mediacheck score FOLDER`` over a folder holding them;
* **Airflow**: ``scripts/stack.py up`` (the `make up` stack: LocalExecutor on SQLite, its scheduler
  polling the bucket every minute), then the videos moved into the watched folder at once, just
  after a poll; the time runs from that move to the last verdict in MongoDB.

Usage: .venv/bin/python bench/bucket_bench.py [--videos N] [--work DIR]   (a kept --work reuses its model)
Writes bench/results/bucket.json: videos, cli_videos_per_min, airflow_videos_per_min, ratio_to_cli,
first_verdict_s, executor.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import ffmpeg

from pipeline import tracking
from pipeline.media.sniff import ffmpeg_exe
from pipeline.services import free_port, mongo_uri
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare, train
from pipeline.store import VERDICTS, ResultStore
from pipeline.synthetic import make_labelled_set

SHARED_VIDEOS = PROJECT_ROOT.parent / "shared" / "datasets" / "videos"
RESULTS = PROJECT_ROOT / "bench" / "results" / "bucket.json"
BIN = Path(sys.executable).parent
TARGETS = {"ratio_to_cli_min": 0.7, "first_verdict_s_max": 90}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--work", type=Path, help="default: a temporary folder, removed afterwards")
    parser.add_argument("--timeout-s", type=float, default=1800, help="give up on the Airflow path after this long")
    args = parser.parse_args()
    if not SHARED_VIDEOS.is_dir():
        sys.exit(f"the shared videos are not at {SHARED_VIDEOS}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bucket-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MEDIACHECK_CONFIG": str(PROJECT_ROOT / "configs" / "demo.yaml"),
        "MEDIACHECK_STORAGE__ROOT": str(work / "data"),
        "MEDIACHECK_STORAGE__INCOMING_URI": (work / "incoming").as_uri(),
    }
    os.environ.update(env)
    try:
        with mongo_uri(None, work / "mongo") as uri:
            env["MONGO_URI"] = uri
            trained_s = train_demo_model(work, uri)
            videos = distinct_videos(args.videos, work / "videos")
            cli = time_cli(videos, work, env)
            airflow = time_airflow(videos, work, env, args.timeout_s)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "videos": len(videos),
        "cli_videos_per_min": 60 * len(videos) / cli["seconds"],
        "airflow_videos_per_min": 60 * len(videos) / airflow["last_verdict_s"],
        "first_verdict_s": airflow["first_verdict_s"],
        "executor": airflow["executor"],
        "cli": cli,
        "airflow": airflow,
        "model_train_s": trained_s,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    report["ratio_to_cli"] = report["airflow_videos_per_min"] / report["cli_videos_per_min"]
    report["targets"] = TARGETS | {
        "ratio_met": report["ratio_to_cli"] >= TARGETS["ratio_to_cli_min"],
        "first_verdict_met": report["first_verdict_s"] <= TARGETS["first_verdict_s_max"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def train_demo_model(work: Path, uri: str) -> float | None:
    """Train the demo's detector, unless --work already holds one; clear the previous run's verdicts."""
    settings = load_settings()
    store = ResultStore.from_uri(uri, database=settings.mongo.database)
    for database in ("bench_cli", "bench_airflow"):
        store.client.drop_database(database)
    for folder in ("cli-bucket", "incoming"):
        shutil.rmtree(work / folder, ignore_errors=True)
    if tracking.champion(settings) is not None:
        return None
    started = time.perf_counter()
    prepare.run(settings, store, str(make_labelled_set(work / "source").root))
    train.run(settings, store)
    print(f"demo model trained in {time.perf_counter() - started:.0f} s", flush=True)
    return round(time.perf_counter() - started, 1)


def distinct_videos(count: int, folder: Path) -> list[Path]:
    """``count`` videos of distinct content: the shared clips, then re-muxed copies tagged with their copy number."""
    folder.mkdir(parents=True, exist_ok=True)
    with (SHARED_VIDEOS / "MANIFEST.tsv").open() as handle:
        clips = [SHARED_VIDEOS / row["file"] for row in csv.DictReader(handle, delimiter="\t")]
    videos = []
    for index in range(count):
        clip, copy = clips[index % len(clips)], index // len(clips)
        target = folder / f"{copy:02d}-{clip.name}"
        if copy == 0:
            shutil.copyfile(clip, target)
        else:
            stream = ffmpeg.input(str(clip)).output(str(target), c="copy", metadata=f"comment=copy {copy}")
            stream.overwrite_output().run(cmd=ffmpeg_exe(), quiet=True)
        videos.append(target)
    return videos


def time_cli(videos: list[Path], work: Path, env: dict) -> dict:
    folder = work / "cli-bucket"
    folder.mkdir()
    for video in videos:
        shutil.copyfile(video, folder / video.name)
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "mediacheck"), "score", str(folder), "--format", "jsonl"], capture_output=True,
                          text=True, env=env | {"MEDIACHECK_MONGO__DATABASE": "bench_cli"}, check=True)  # fmt: skip
    seconds = time.perf_counter() - started
    statuses = [json.loads(line)["status"] for line in done.stdout.splitlines()]
    print(f"CLI: {len(statuses)} videos in {seconds:.0f} s", flush=True)
    return {"seconds": round(seconds, 1), "scored": statuses.count("scored"), "failed": statuses.count("failed")}


def time_airflow(videos: list[Path], work: Path, env: dict, timeout_s: float) -> dict:
    """Start the stack, wait until it polls the bucket, move the videos in, wait for every verdict."""
    port = free_port()
    env = env | {
        "MEDIACHECK_MONGO__DATABASE": "bench_airflow",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "MEDIACHECK_MLFLOW__UI_URL": f"http://127.0.0.1:{free_port()}",
    }
    stack = [str(BIN / "python"), str(PROJECT_ROOT / "scripts" / "stack.py")]
    airflow_home = work / "airflow"
    shutil.rmtree(airflow_home, ignore_errors=True)  # a fresh metadata database: only this run's tasks
    subprocess.run([*stack, "up", "--airflow-home", str(airflow_home)], env=env, check=True, timeout=600)
    store = ResultStore.from_uri(env["MONGO_URI"], database="bench_airflow")
    try:
        api = f"http://127.0.0.1:{port}"
        password = json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = _post(f"{api}/auth/token", {"username": "admin", "password": password})["access_token"]
        # Drop just after a poll of the bucket has finished: the wait for the next one (the DAG polls
        # every minute) is then nearly whole, so the figures are the unlucky case, not a lucky one.
        polls = _wait(lambda: _runs(api, token), 600, "a first score_incoming run")
        _wait(lambda: _runs(api, token) > polls, 120, "the next score_incoming run")
        staging = work / "incoming" / ".staging"  # hidden: the listing ignores it
        staging.mkdir(parents=True)
        for video in videos:
            shutil.copyfile(video, staging / video.name)
        dropped = time.time()
        for video in videos:
            os.rename(staging / video.name, work / "incoming" / video.name)
        first = _wait(lambda: store.db[VERDICTS].count_documents({}) >= 1 and time.time(), timeout_s, "a verdict")
        last = _wait(lambda: store.db[VERDICTS].count_documents({}) >= len(videos) and time.time(), timeout_s,
                     f"{len(videos)} verdicts")  # fmt: skip
        tasks = _get(f"{api}/api/v2/dags/score_incoming/dagRuns/~/taskInstances?limit=1000", token)["task_instances"]
    finally:
        subprocess.run([*stack, "down"], env=env, timeout=300)
    chunks = [t for t in tasks if t["task_id"] == "score_chunk" and t["start_date"]]
    started = min(datetime.fromisoformat(t["start_date"]).timestamp() for t in chunks)
    print(f"Airflow: {len(videos)} verdicts {last - dropped:.0f} s after the drop", flush=True)
    return {
        "first_verdict_s": round(first - dropped, 1),
        "last_verdict_s": round(last - dropped, 1),
        # the wait for the next poll of the bucket (every minute) and the settle time (score.settle_s)
        "first_scoring_task_started_s": round(started - dropped, 1),
        "executor": "LocalExecutor (make up, SQLite)",
        "scoring_tasks": len(chunks),
        "scoring_task_s": sorted(round(t["duration"] or 0, 1) for t in chunks),
        "objects_per_task": int(
            env.get("MEDIACHECK_SCORE__OBJECTS_PER_TASK") or load_settings().score.objects_per_task
        ),  # noqa: E501
    }


def _runs(api: str, token: str) -> int:
    return _get(f"{api}/api/v2/dags/score_incoming/dagRuns?state=success", token).get("total_entries", 0)


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if found := condition():
                return found
        except OSError:  # the API server is still starting
            pass
        time.sleep(1)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


if __name__ == "__main__":
    main()
