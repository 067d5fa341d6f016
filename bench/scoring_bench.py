"""Scoring benchmark (issue: Score) on 2 CPU cores.

1. Batch inference at 256x256 (EfficientNetB0 detector, 256 px input): ONNX Runtime vs Keras
   `predict`, in the same run, and the largest logit difference on real images (CIFAKE test
   photos from ../shared/datasets, up-sampled to 256x256 as the prepare stage does) for a
   detector with ImageNet weights.
2. Drop-to-verdict with the model already loaded: a generated 60 s 720p H.264 clip and each
   shared video, stage by stage (read+identify, extract, infer, store) into a real
   MongoDB-wire server.

Usage: .venv/bin/python bench/scoring_bench.py   (writes bench/results/scoring.json)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.media.images import decode_image, resize_to_square
from pipeline.media.video import ffmpeg_exe
from pipeline.model.bundle import load_bundle, save_bundle
from pipeline.model.calibration import Calibration
from pipeline.model.onnx_export import keras_logits
from pipeline.model.train import build_classifier, serving_copy
from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, ModelSettings, load_settings
from pipeline.stages.score import LoadedModel, score_uri
from pipeline.store import ResultStore
from pipeline.tracking import ModelRef

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"
RESULTS = PROJECT_ROOT / "bench" / "results" / "scoring.json"
BATCH, ROUNDS = 32, 5


def real_frames(count: int) -> np.ndarray:
    with tarfile.open(SHARED / "cifake" / "test.tar.gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile()][:: 20000 // count][:count]
        images = [decode_image(archive.extractfile(m).read())[0] for m in members]
    return np.stack([resize_to_square(image, 256, "letterbox") for image in images]).astype(np.float32)


def throughput(predict, frames: np.ndarray) -> float:
    predict(frames)  # warm-up: tracing, graph optimisation
    started = time.perf_counter()
    for _ in range(ROUNDS):
        predict(frames)
    return ROUNDS * len(frames) / (time.perf_counter() - started)


def main() -> int:
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: this benchmark needs the shared datasets", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="scoring-bench-"))
    settings = ModelSettings(backbone="efficientnet_b0", weights="none", image_size=256)
    model = serving_copy(build_classifier(settings, frame_size=256), settings)
    frames = real_frames(BATCH)
    bundle = load_bundle(
        save_bundle(
            work / "bundle",
            model,
            Calibration(),
            {"frame_size": 256, "resize_policy": "letterbox", "frames_per_video": 32},
            check_frames=frames[:8],
        )
    )
    keras_rate = throughput(lambda x: model.predict(x, batch_size=BATCH, verbose=0), frames)
    onnx_rate = throughput(lambda x: bundle.logits(x, batch_size=BATCH), frames)
    # Score agreement on a network with real weights (B0's ImageNet weights cannot be fetched offline).
    lite = ModelSettings(backbone="efficientnet_lite0", weights="imagenet", image_size=256)
    lite_model = serving_copy(build_classifier(lite, frame_size=256), lite)
    lite_bundle = load_bundle(save_bundle(work / "lite0", lite_model, Calibration(), {"frame_size": 256},
                                          check_frames=frames[:8]))  # fmt: skip
    max_diff = float(np.max(np.abs(lite_bundle.logits(frames) - keras_logits(lite_model, frames))))

    clip = work / "long720.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30:duration=60", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", str(clip)], check=True, timeout=600)  # fmt: skip
    videos = sorted(p for p in (SHARED / "videos").rglob("*") if p.suffix in (".mp4", ".avi"))
    config = load_settings(storage={"root": work / "data", "incoming_uri": (work / "in").as_uri()})
    loaded = LoadedModel(bundle, ModelRef("bench", "0", "none"))
    per_video = []
    with embedded_mongo(":memory:") as uri:
        store = ResultStore.from_uri(uri, database="bench")
        store.ensure_indexes()
        for path in [clip, *videos]:
            started = time.perf_counter()
            summary = score_uri(str(path), loaded, config, store, settle_s=0)
            total = time.perf_counter() - started
            timings = store.find_verdict(summary["content_id"])["timings_s"]
            stages = {k: round(v, 3) for k, v in timings.items() if k != "total"}
            stages["store"] = round(total - timings["total"], 3)  # the upsert after the document was built
            per_video.append({"video": path.name, "s": round(total, 3), "stages_s": stages})
    result = {
        "command": "python bench/scoring_bench.py", "cores": os.cpu_count(), "machine": platform.machine(),
        "model": "efficientnet_b0 detector, 256x256 input, batch 32",
        "images_per_s": round(onnx_rate, 1), "keras_predict_images_per_s": round(keras_rate, 1),
        "ratio_to_keras": round(onnx_rate / keras_rate, 2), "max_abs_diff_vs_keras": max_diff,
        "max_abs_diff_model": "efficientnet_lite0 (ImageNet weights) detector, 32 CIFAKE test photos",
        "drop_to_verdict_s": per_video[0]["s"], "drop_to_verdict_stages_s": per_video[0]["stages_s"],
        "shared_video_s_mean": round(float(np.mean([v["s"] for v in per_video[1:]])), 3),
        "per_video": per_video,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_video"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
