"""Prepare-stage benchmark on real data from ../shared/datasets (issue: Prepare).

1. CIFAKE train+test (120,000 32x32 JPEGs): the whole prepare stage (discover, decode,
   resize to 256x256, JPEG, sha256, perceptual hash, dedupe, grouped split, manifest,
   MongoDB records) in files/s, against a minimal decode -> resize -> encode -> write loop over
   the same files on the same cores in the same run.
2. Frame extraction: 32 uniform frames from each shared video and from a generated 60 s 720p
   H.264 clip, against a bare FFmpeg command producing the same number of frames.

Both loops work in /dev/shm where it exists: on a disk that throttles writes, whichever loop
runs second pays for the first one's 2.4 GB of writeback, and the ratio measures the disk.

Usage: .venv/bin/python bench/prepare_bench.py [--limit N] [--work-dir DIR]   (writes bench/results/prepare.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import psutil

from pipeline.media.video import extract_frames, ffmpeg_exe, probe
from pipeline.services import start_mongo_server, stop_process
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare
from pipeline.store import ResultStore

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"
RESULTS = PROJECT_ROOT / "bench" / "results" / "prepare.json"
RAM_FOLDER = Path("/dev/shm")


def baseline_one(task: tuple[str, str]) -> None:
    """The minimal loop: decode, resize to 256x256, encode JPEG, write."""
    source, target = task
    image = cv2.imdecode(np.fromfile(source, np.uint8), cv2.IMREAD_COLOR)
    resized = cv2.resize(image, (256, 256), interpolation=cv2.INTER_CUBIC)
    Path(target).write_bytes(cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())


def extract_cifake(source: Path, limit: int | None = None) -> list[str]:
    """Unpack CIFAKE's train and test archives into ``source``; keep an even ``limit`` sample."""
    for name in ("train.tar.gz", "test.tar.gz"):
        with tarfile.open(SHARED / "cifake" / name) as archive:
            archive.extractall(source, filter="data")
    files = sorted(str(p) for p in source.rglob("*.jpg"))
    if limit:
        keep = set(files[:: max(1, len(files) // limit)][:limit])
        for path in files:
            if path not in keep:
                os.remove(path)
        files = sorted(keep)
    return files


def bench_cifake(work: Path, limit: int | None) -> dict:
    source = work / "cifake"
    files = extract_cifake(source, limit)
    out = work / "baseline"
    out.mkdir()
    os.sync()  # each loop starts with no other writes pending
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(baseline_one, [(f, str(out / f"{i}.jpg")) for i, f in enumerate(files)], chunksize=256))
    baseline_s = time.perf_counter() - started
    shutil.rmtree(out)
    os.sync()

    settings = load_settings(storage={"root": work / "data", "incoming_uri": (work / "in").as_uri()})
    server, uri = start_mongo_server(":memory:")
    try:
        store = ResultStore.from_uri(uri, database="bench")
        server_cpu = psutil.Process(server.pid).cpu_times
        cpu_before = server_cpu().user + server_cpu().system
        started = time.perf_counter()
        summary = prepare.run(settings, store, str(source))
        pipeline_s = time.perf_counter() - started
        mongodb_cpu_s = server_cpu().user + server_cpu().system - cpu_before
    finally:
        stop_process(server)
    return {
        "files": len(files),
        "baseline_s": round(baseline_s, 1),
        "pipeline_s": round(pipeline_s, 1),
        "baseline_files_per_s": round(len(files) / baseline_s, 1),
        "files_per_s": round(len(files) / pipeline_s, 1),
        "ratio_to_baseline": round(baseline_s / pipeline_s, 3),
        "kept": summary["kept"],
        "duplicate": summary["duplicate"],
        "quarantined": summary["quarantined"],
        "step_s": summary["step_s"],
        "mongodb_server_cpu_s": round(mongodb_cpu_s, 1),  # on the same two cores, during the stage
        "splits": summary["splits"],
    }


def bare_ffmpeg_frames(path: str, count: int) -> float:
    """A bare FFmpeg command producing ``count`` evenly spaced frames as raw RGB."""
    duration = probe(path, timeout_s=60).duration_s
    started = time.perf_counter()
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-i",
            path,
            "-vf",
            f"fps={count}/{duration:.6f}",
            "-frames:v",
            str(count),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )
    return time.perf_counter() - started


def bench_extraction(work: Path, count: int = 32) -> dict:
    clip = work / "long720.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=60",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
        timeout=600,
    )
    videos = sorted(str(p) for p in (SHARED / "videos").rglob("*") if p.suffix in (".mp4", ".avi"))
    rows = []
    for path in [*videos, str(clip)]:
        started = time.perf_counter()
        _, frames = extract_frames(path, count=count, timeout_s=300)
        ours = time.perf_counter() - started
        bare = bare_ffmpeg_frames(path, count)
        rows.append(
            {"video": Path(path).name, "frames": len(frames), "s": round(ours, 3), "bare_ffmpeg_s": round(bare, 3)}
        )
    shared_rows = rows[:-1]
    return {
        "per_video": rows,
        "extract_s_per_video": round(float(np.mean([r["s"] for r in shared_rows])), 3),
        "extract_ratio_to_ffmpeg": round(
            sum(r["bare_ffmpeg_s"] for r in shared_rows) / sum(r["s"] for r in shared_rows), 3
        ),
        "clip_60s_720p_s": rows[-1]["s"],
        "clip_60s_720p_bare_ffmpeg_s": rows[-1]["bare_ffmpeg_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="use only N CIFAKE files (quick check)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=RAM_FOLDER if RAM_FOLDER.is_dir() else None,
        help="where both loops read and write (default: RAM-backed /dev/shm where present, so that the "
        "ratio measures the work, not this machine's disk; both loops write about 2.4 GB)",
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: this benchmark needs the shared datasets", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="prepare-bench-", dir=args.work_dir) as folder:
        work = Path(folder)
        result = {
            "command": "python bench/prepare_bench.py" + (f" --limit {args.limit}" if args.limit else ""),
            "cores": os.cpu_count(),
            "work_dir": str(work.parent),
            "machine": platform.processor() or platform.machine(),
            **bench_cifake(work, args.limit),
            **bench_extraction(work),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_video", "splits")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
