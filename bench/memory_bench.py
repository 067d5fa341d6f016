"""Memory benchmark (issue: reliability of the watched bucket) on 2 CPU cores.

Peak resident memory of scoring one hostile object, each in its own process, next to a normal
720p clip: a 3 GB file, an 8192x8192 video (refused by the pixel limit, and decoded with the
limit lifted), a 10-hour video and a 30000x30000 image. Each child
process scores its object through the score stage (``score.score_uri``: listing facts, streamed
hash, decode limits, FFmpeg, ONNX Runtime, the verdict in a real MongoDB-wire server) with an
EfficientNetB0 detector at 256 px. The peak is the scorer's own peak RSS plus the largest
FFmpeg child's (an upper bound: both rarely peak at once).

Usage: .venv/bin/python bench/memory_bench.py [--work-dir DIR]   (writes bench/results/memory.json)
Target: every case within 1.5x the 720p clip's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from pipeline.media.video import ffmpeg_exe
from pipeline.settings import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results" / "memory.json"
TARGET_RATIO = 1.5


def _ffmpeg(*arguments: str, timeout_s: float = 900) -> None:
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", *arguments], check=True, timeout=timeout_s)


def make_cases(folder: Path) -> dict[str, Path]:
    """The objects, generated with the bundled FFmpeg and by hand (sizes are what counts, not content)."""
    cases = {
        "720p_clip": folder / "clip720.mp4",
        "3gb_file": folder / "big.mp4",
        "8192x8192_video": folder / "huge_frame.mp4",
        "10_hour_video": folder / "ten_hours.mp4",
        "30000x30000_image": folder / "huge.png",
    }
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=20", "-c:v", "libx264", "-preset",
            "veryfast", "-pix_fmt", "yuv420p", str(cases["720p_clip"]))  # fmt: skip
    with cases["3gb_file"].open("wb") as handle:  # a 720p clip's start, then sparse zeros to 3 GB
        handle.write(cases["720p_clip"].read_bytes())
        handle.truncate(3 * 1024**3)
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=8192x8192:rate=1:duration=2", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv420p", str(cases["8192x8192_video"]))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=1:duration=36000", "-c:v", "libx264", "-preset",
            "ultrafast", "-g", "600", "-pix_fmt", "yuv420p", str(cases["10_hour_video"]))  # fmt: skip
    _write_blank_png(cases["30000x30000_image"], 30000, 30000)
    return cases


def _write_blank_png(path: Path, width: int, height: int) -> None:
    """A real 30000x30000 greyscale PNG, compressed row by row (never whole in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte + pixels
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        for _ in range(height // 100):
            handle.write(chunk(b"IDAT", compressor.compress(row * 100)))
        handle.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))


def build_bundle(folder: Path) -> Path:
    import numpy as np

    from pipeline.model.bundle import save_bundle
    from pipeline.model.calibration import Calibration
    from pipeline.model.train import build_classifier, serving_copy
    from pipeline.settings import ModelSettings

    settings = ModelSettings(backbone="efficientnet_b0", weights="none", image_size=256)
    model = serving_copy(build_classifier(settings, frame_size=256), settings)
    metadata = {"frame_size": 256, "resize_policy": "letterbox", "frames_per_video": 32, "aggregation": "mean"}
    check = np.random.default_rng(0).integers(0, 256, (4, 256, 256, 3)).astype(np.float32)
    return save_bundle(folder / "bundle", model, Calibration(), metadata, check_frames=check)


# Also decoded, with the pixel limit lifted: FFmpeg's downscaling, not the refusal, bounds memory.
LIFTED_PIXEL_LIMIT = {"8192x8192_video_decoded": {"max_video_pixels": 70_000_000}}


def score_one(path: Path, bundle_dir: Path, work: Path, prepare: dict) -> dict:
    """In the child: score one object as the watched bucket would, and report peak memory."""
    from pipeline.model.bundle import load_bundle
    from pipeline.services import embedded_mongo
    from pipeline.settings import load_settings
    from pipeline.stages import score
    from pipeline.store import ResultStore
    from pipeline.tracking import ModelRef

    settings = load_settings(
        storage={"root": work / "data", "incoming_uri": path.parent.as_uri()}, score={"settle_s": 0}, prepare=prepare
    )
    loaded = score.LoadedModel(load_bundle(bundle_dir), ModelRef("bench", "0", "none"))
    with embedded_mongo(":memory:") as uri:
        store = ResultStore.from_uri(uri, database="bench")
        started = time.perf_counter()
        summary = score.score_uri(path.as_uri(), loaded, settings, store)
        seconds = time.perf_counter() - started
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ffmpeg = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # waited-for children only
        verdict = store.find_verdict(summary["content_id"]) or {}
    return {
        "status": summary["status"],
        "reason": summary.get("reason"),
        "frames_scored": verdict.get("frame_count"),
        "seconds": round(seconds, 2),
        "scorer_peak_rss_mb": round(own, 1),
        "ffmpeg_peak_rss_mb": round(ffmpeg, 1),
        "peak_rss_mb": round(own + ffmpeg, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None, help="where the generated objects go (about 1 GB)")
    parser.add_argument("--child", nargs=4, metavar=("OBJECT", "BUNDLE", "WORK", "PREPARE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        *paths, prepare = args.child
        print(json.dumps(score_one(*(Path(p) for p in paths), json.loads(prepare))))
        return 0
    work = Path(tempfile.mkdtemp(prefix="memory-bench-", dir=args.work_dir))
    cases, bundle = make_cases(work), build_bundle(work)
    cases["8192x8192_video_decoded"] = cases["8192x8192_video"]
    results = {}
    for name, path in cases.items():
        prepare = json.dumps(LIFTED_PIXEL_LIMIT.get(name, {}))
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(bundle), str(work / name), prepare],
            capture_output=True, text=True, timeout=1800, check=True,
        )  # fmt: skip
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    baseline = results["720p_clip"]["peak_rss_mb"]
    for result in results.values():
        result["ratio_to_720p"] = round(result["peak_rss_mb"] / baseline, 3)
    worst = max(r["ratio_to_720p"] for r in results.values())
    report = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform()},
        "command": ".venv/bin/python bench/memory_bench.py",
        "cases": results,
        "max_ratio_to_720p": worst,
        "target_ratio": TARGET_RATIO,
        "target_met": worst <= TARGET_RATIO,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"max ratio to the 720p clip: {worst:.2f} (target {TARGET_RATIO}); wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
