"""The watched bucket under faults, with the trained champion, real files and real processes.

One bad object never stops the rest; a copy in progress is never scored; two scorers never do
the same work; a run killed with SIGKILL, or cut off from MongoDB, is finished by the next run
with exactly one verdict per object.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.services import free_port, start_mongo_server, stop_process
from pipeline.stages import score
from pipeline.store import CLAIMS, VERDICTS, ResultStore
from pipeline.synthetic import drop_incoming

pytestmark = pytest.mark.slow


def _bucket_settings(world, folder: Path, **score_settings):
    storage = world.settings.storage.model_copy(update={"incoming_uri": folder.as_uri()})
    return world.settings.model_copy(
        update={"storage": storage, "score": world.settings.score.model_copy(update=score_settings)}
    )


def _drop_many(folder: Path, seeds: range) -> dict[str, list[str]]:
    """Media in subfolders, as content id -> the URIs holding it (some contents repeat across seeds)."""
    found: dict[str, list[str]] = {}
    for seed in seeds:
        for path in drop_incoming(folder / f"batch{seed}", seed=seed):
            found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path.as_uri())
    return found


def _cli(folder: Path, mongo_uri: str, database: str, **env: str) -> list[str]:
    """The command and environment of ``mediacheck score`` over ``folder`` (settings as the world's)."""
    return [sys.executable, "-m", "pipeline", "score", "--format", "jsonl"], {
        **os.environ,
        "MONGO_URI": mongo_uri,
        "MEDIACHECK_MONGO__DATABASE": database,
        "MEDIACHECK_STORAGE__INCOMING_URI": folder.as_uri(),
        **env,
    }


def _wait_for(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _verdict_ids(store: ResultStore) -> list[str]:
    return sorted(d["_id"] for d in store.db[VERDICTS].find({}, {"_id": 1}))


@pytest.mark.timeout(300)
def test_an_unexpected_error_in_a_chunk_fails_only_its_object_and_the_retry_finishes_it(
    world, store, tmp_path, monkeypatch
):
    folder = tmp_path / "bucket"
    media = _drop_many(folder, range(41, 42))
    settings = _bucket_settings(world, folder)
    (chunk,) = score.in_chunks(score.survey(settings, store).new, len(media) + 1)
    doomed = chunk[1]
    real_score_content = score.score_content

    def failing_on_one(path, *args):
        if Path(path).name == Path(doomed).name:
            raise RuntimeError("a decoder bug")
        return real_score_content(path, *args)

    monkeypatch.setattr(score, "score_content", failing_on_one)
    with pytest.raises(score.ChunkFailed, match=f"1 of {len(chunk)} objects failed") as failed:
        score.score_chunk(chunk, settings, store)
    assert f"{doomed} (RuntimeError: a decoder bug)" in str(failed.value)
    assert len(_verdict_ids(store)) == len(media) - 1 and store.db[CLAIMS].count_documents({}) == 0

    monkeypatch.setattr(score, "score_content", real_score_content)  # the task's retry
    statuses = {r["uri"]: r["status"] for r in score.score_chunk(chunk, settings, store)}
    assert statuses.pop(doomed) in ("scored", "failed") and set(statuses.values()) == {"already_scored"}
    assert _verdict_ids(store) == sorted(media)


def test_objects_are_chunked_in_order_with_a_shorter_last_chunk():
    assert score.in_chunks(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert score.in_chunks([], 8) == []


@pytest.mark.timeout(300)
def test_one_bad_object_never_stops_the_rest(world, store, tmp_path):
    folder = tmp_path / "bucket"
    media = _drop_many(folder, range(31, 32))
    os.mkfifo(folder / "pipe.mp4")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "zero.mp4").symlink_to("/dev/zero")
    (folder / "labels.csv").write_text("file,label\n")
    vanishing = folder / "vanishing.jpg"
    vanishing.write_bytes(b"\xff\xd8\xff soon gone")
    settings = _bucket_settings(world, folder)

    found = score.survey(settings, store)
    vanishing.unlink()  # between the listing and the scoring
    loaded = score.load_champion(settings)
    results = [score.score_uri(uri, loaded, settings, store) for uri in found.new]

    by_name = {Path(r["uri"]).name: r for r in results}
    assert by_name["vanishing.jpg"] == {
        "uri": vanishing.as_uri(), "status": "skipped", "reason": "vanished before it was read"
    }  # fmt: skip
    assert {r["content_id"] for r in results if r["status"] in ("scored", "failed")} == set(media)
    assert _verdict_ids(store) == sorted(media)
    reasons = {Path(s.uri).name: s.reason for s in found.skipped}
    assert reasons == {
        "pipe.mp4": "not a regular file (a FIFO)",
        "gone.jpg": "dangling symbolic link",
        "zero.mp4": "symbolic link out of the bucket (not followed)",
    }
    for name, reason in reasons.items():
        assert store.intake_record((folder / name).as_uri())["reason"] == reason
    assert found.sidecars == [(folder / "labels.csv").as_uri()]
    assert store.find_verdict(hashlib.sha256(b"file,label\n").hexdigest()) is None


def test_a_copy_in_progress_is_never_scored(world, store, tmp_path):
    folder = tmp_path / "bucket"
    clip = next(p for p in drop_incoming(tmp_path / "source", seed=41) if p.suffix == ".mp4")
    data, half = clip.read_bytes(), len(clip.read_bytes()) // 2
    settings = _bucket_settings(world, folder, settle_s=1.0)
    target = folder / "copying.mp4"
    folder.mkdir()
    target.write_bytes(data[:half])

    def finish_copy() -> None:
        time.sleep(0.5)
        with target.open("ab") as handle:
            handle.write(data[half:])

    copier = threading.Thread(target=finish_copy)
    copier.start()
    found = score.survey(settings, store)  # waits out the settle period, sees the file grow
    copier.join()
    assert found.new == [] and found.waiting == [target.as_uri()]
    assert store.find_verdict(hashlib.sha256(data[:half]).hexdigest()) is None

    loaded = score.load_champion(settings)
    assert score.score_uri(target.as_uri(), loaded, settings, store)["status"] == "waiting"  # still young
    time.sleep(1.1)
    (result,) = score.run(settings, store)
    assert result["content_id"] == hashlib.sha256(data).hexdigest() and result["status"] == "scored"
    assert store.find_verdict(hashlib.sha256(data[:half]).hexdigest()) is None


@pytest.mark.timeout(600)
def test_two_scorers_at_once_score_each_object_once(world, mongo_uri, tmp_path):
    folder = tmp_path / "bucket"
    media = _drop_many(folder, range(51, 54))
    database = "two_scorers"
    command, env = _cli(folder, mongo_uri, database)
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    rows = [[json.loads(line) for line in out.decode().splitlines()] for out, _ in outputs]
    assert all(rows), "both scorers saw the new objects (they ran at once)"

    done = [r["content_id"] for run in rows for r in run if r["status"] in ("scored", "failed")]
    assert sorted(done) == sorted(media)  # each content scored by exactly one of the two
    assert {r["status"] for run in rows for r in run} <= {"scored", "failed", "claimed", "already_scored"}
    store = ResultStore.from_uri(mongo_uri, database=database)
    try:
        assert _verdict_ids(store) == sorted(media)
        assert store.db[CLAIMS].count_documents({}) == 0
    finally:
        store.client.drop_database(database)


@pytest.mark.timeout(600)
def test_a_run_killed_mid_object_is_finished_by_the_next_with_one_verdict_each(world, mongo_uri, tmp_path):
    folder = tmp_path / "bucket"
    media = _drop_many(folder, range(61, 64))
    database = "killed_run"
    store = ResultStore.from_uri(mongo_uri, database=database)
    command, env = _cli(folder, mongo_uri, database)
    try:
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(
            lambda: store.db[VERDICTS].count_documents({}) >= 2 and store.db[CLAIMS].count_documents({}) == 1,
            timeout_s=240,
            what="the run to be in the middle of an object",
        )
        run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
        assert 2 <= len(_verdict_ids(store)) < len(media)

        rerun = subprocess.run(command, env=env, capture_output=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        assert _verdict_ids(store) == sorted(media)  # none lost, none doubled
        for document in store.db[VERDICTS].find({}, {"sources": 1}):
            assert sorted(document["sources"]) == sorted(media[document["_id"]])
        assert store.db[CLAIMS].count_documents({}) == 0  # the dead run's claim was taken over
    finally:
        store.client.drop_database(database)


@pytest.mark.timeout(600)
def test_mongodb_lost_mid_run_is_retried_then_named_and_the_next_run_resumes(world, tmp_path):
    folder = tmp_path / "bucket"
    media = _drop_many(folder, range(71, 73))
    port, storage = free_port(), tmp_path / "mongo"
    server, uri = start_mongo_server(storage, port=port)
    store = ResultStore.from_uri(uri, database="outage", retries=0)
    command, env = _cli(folder, uri, "outage", MEDIACHECK_MONGO__RETRIES="2", MEDIACHECK_MONGO__TIMEOUT_S="0.5")
    try:
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: store.db[VERDICTS].count_documents({}) >= 1, timeout_s=240, what="a first verdict")
        server.kill()
        server.wait()
        started = time.monotonic()
        out, err = run.communicate(timeout=120)
        message = (out + err).decode()
        assert run.returncode == 3, message[-2000:]
        assert f"MongoDB at 127.0.0.1:{port} did not answer after 3 attempts" in message
        assert "Traceback" not in message and time.monotonic() - started < 60

        server, _ = start_mongo_server(storage, port=port)
        rerun = subprocess.run(command, env=env, capture_output=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        assert _verdict_ids(store) == sorted(media)
        assert store.db[CLAIMS].count_documents({}) == 0
        for content_id, uris in media.items():
            assert all(store.intake_record(uri)["content_id"] == content_id for uri in uris)
    finally:
        store.client.close()
        stop_process(server)


def test_every_container_ffmpeg_reads_and_every_animation_is_scored_as_a_video(world, store, tmp_path):
    from PIL import Image

    from tests.media.conftest import ANIMATED, CONTAINERS, PATTERN, ffmpeg, save_animation

    folder = tmp_path / "bucket"
    folder.mkdir()
    for name, options in CONTAINERS.items():
        ffmpeg(*PATTERN, *options, str(folder / name))
    frames = [Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)) for i in range(5)]
    for fmt, suffix in ANIMATED.items():
        save_animation(folder / f"animated.{suffix}", frames, fmt)

    results = score.run(_bucket_settings(world, folder), store)

    expected = [*CONTAINERS, *(f"animated.{suffix}" for suffix in ANIMATED.values())]
    assert {Path(r["uri"]).name: (r["status"], r["kind"]) for r in results} == dict.fromkeys(
        expected, ("scored", "video")
    )
    assert all(store.find_verdict(r["content_id"])["frame_count"] >= 2 for r in results)
