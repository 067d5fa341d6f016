"""Model robustness: ROC-AUC on clean media and after everyday re-encoding (issue: reliability and security).

Two models, trained by the product's own prepare and train stages on the real data in
../shared/datasets and kept under --work (``trust_bench.world``):

* ``cifake``: EfficientNet-Lite0 fine-tuned on CIFAKE (``bench/robustness_cifake.yaml``), judged on
  the official test split (duplicates removed, as prepare keeps it);
* ``videos``: the video model on the 40 shared clips (``bench/trust_video.yaml``, face crops), judged
  frame by frame on the frames the score stage extracts from the held-out clips.

Each perturbation changes the media as a user's copy would have been changed, before the product's
own frame preparation (``score.model_frame``: region, resize, JPEG loss) and its ONNX model:

* ``jpeg_q75``: re-encoded as JPEG quality 75 (libjpeg through OpenCV), decoded by the product;
* ``rescale_0.5x``: downscaled to half size (area averaging), then upscaled back (bilinear);
* ``blur_sigma1``: Gaussian blur, sigma 1 pixel;
* ``h264_crf28`` (videos): the file re-encoded by FFmpeg (libx264, CRF 28), frames extracted again.

Format-bias control: every medium of both classes re-encoded identically (images: JPEG quality 95;
videos: libx264 CRF 18 in MP4), so that a model keyed on the original formats (every .avi clip is
real) would lose accuracy; the accuracy at the model's calibrated threshold must stay within 2 points.
AUC drops carry a 95% interval from a paired bootstrap over media (clips for videos).

Usage: .venv/bin/python bench/robustness_bench.py [--work DIR] [--retrain] [--limit N]
Writes bench/results/robustness.json. The models stay under --work (default .data/bench/robustness)
for the next run; the run ends by saying where each is (also in the JSON).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import ffmpeg
import numpy as np
from kept_models import model_location, print_kept
from sklearn.metrics import roc_auc_score
from trust_bench import CONFIGS, World, world, world_arguments

from pipeline.media.images import decode_image
from pipeline.media.sniff import ffmpeg_exe
from pipeline.media.video import DecodeLimits, extract_frames
from pipeline.services import mongo_uri
from pipeline.settings import PROJECT_ROOT
from pipeline.stages import score

RESULTS = PROJECT_ROOT / "bench" / "results" / "robustness.json"
MODELS = {"cifake": PROJECT_ROOT / "bench" / "robustness_cifake.yaml", "video": CONFIGS["video"]}
MAX_AUC_DROP, MAX_ACCURACY_CHANGE = 0.03, 0.02
BOOTSTRAP = 500
Perturb = Callable[[np.ndarray], np.ndarray]


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "OpenCV could not encode a JPEG"
    return decode_image(data.tobytes())[0]


def rescale(rgb: np.ndarray, factor: float = 0.5) -> np.ndarray:
    height, width = rgb.shape[:2]
    small = cv2.resize(
        rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def blur(rgb: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def unchanged(rgb: np.ndarray) -> np.ndarray:
    return rgb


PIXEL_PERTURBATIONS: dict[str, Perturb] = {
    "jpeg_q75": lambda rgb: jpeg(rgb, 75),
    "rescale_0.5x": rescale,
    "blur_sigma1": blur,
}
FILE_REENCODINGS = {"h264_crf28": 28}  # videos: name -> libx264 CRF
FORMAT_CONTROL = {"image_jpeg_quality": 95, "video_crf": 18}


def main() -> None:
    args = world_arguments(__doc__.splitlines()[0], PROJECT_ROOT / ".data" / "bench" / "robustness")
    with mongo_uri(None, args.work / "mongo") as store_uri:
        worlds = {name: world(name, config, args, store_uri) for name, config in MODELS.items()}
        models = {name: describe(found, MODELS[name]) for name, found in worlds.items()}
        datasets = {"cifake": image_robustness(worlds["cifake"]), "videos": video_robustness(worlds["video"])}
    report = summarise(datasets) | {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "work": str(args.work),
        "models": models,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "datasets"}, indent=2))
    print_kept(args.work, {name: model["model"] for name, model in models.items()})


# -- images ------------------------------------------------------------------------------------------
def image_robustness(found: World) -> dict:
    """Every held-out CIFAKE image, clean and under each pixel perturbation and the format control."""
    test = found.manifest.query("split == 'test'").drop_duplicates("content_id")
    paths, labels = test["source_uri"].map(_local).tolist(), test["label"].to_numpy(int)
    conditions = PIXEL_PERTURBATIONS | {"format_control": lambda rgb: jpeg(rgb, FORMAT_CONTROL["image_jpeg_quality"])}
    probabilities = {"clean": _image_probabilities(found, paths, unchanged)}
    for name, perturb in conditions.items():
        started = time.perf_counter()
        probabilities[name] = _image_probabilities(found, paths, perturb)
        print(f"cifake {name}: {len(paths)} images in {time.perf_counter() - started:.0f} s", flush=True)
    groups = np.arange(len(paths))  # every image is its own unit for the bootstrap
    return compare(probabilities, labels, groups, found.bundle.calibration.threshold) | {"media": len(paths)}


def _image_probabilities(found: World, paths: list[str], perturb: Perturb) -> np.ndarray:
    chunks = (paths[i : i + 1024] for i in range(0, len(paths), 1024))
    return np.concatenate([
        found.bundle.probabilities(
            np.stack([score.model_frame(perturb(decode_image(Path(p).read_bytes())[0]), found.bundle) for p in chunk]),
            batch_size=256,
        )
        for chunk in chunks
    ])  # fmt: skip


# -- videos ------------------------------------------------------------------------------------------
def video_robustness(found: World) -> dict:
    """The frames of every held-out clip, clean, under each pixel perturbation, re-encoded, and the control."""
    test = found.manifest.query("split == 'test'").drop_duplicates("content_id")
    clips = list(zip(test["source_uri"].map(_local), test["label"].astype(int), strict=True))
    probabilities: dict[str, list[np.ndarray]] = {}
    labels, groups = [], []
    with tempfile.TemporaryDirectory(prefix="robustness-") as temp:
        for index, (path, label) in enumerate(clips):
            frames = _frames(path, found)
            labels += [label] * len(frames)
            groups += [index] * len(frames)
            by_condition = {"clean": frames} | {
                name: [perturb(frame) for frame in frames] for name, perturb in PIXEL_PERTURBATIONS.items()
            }
            for name, crf in (FILE_REENCODINGS | {"format_control": FORMAT_CONTROL["video_crf"]}).items():
                by_condition[name] = _frames(_reencode(path, Path(temp) / f"{index}-{name}.mp4", crf), found)
                if len(by_condition[name]) != len(frames):
                    raise RuntimeError(f"{path}: {name} gave {len(by_condition[name])} frames, not {len(frames)}")
            for name, condition in by_condition.items():
                batch = np.stack([score.model_frame(frame, found.bundle) for frame in condition])
                probabilities.setdefault(name, []).append(found.bundle.probabilities(batch, batch_size=32))
            print(f"videos: {index + 1}/{len(clips)} clips", flush=True)
    stacked = {name: np.concatenate(parts) for name, parts in probabilities.items()}
    threshold = found.bundle.calibration.threshold
    return compare(stacked, np.array(labels), np.array(groups), threshold) | {
        "clips": len(clips),
        "frames": len(labels),
    }


def _frames(path: str, found: World) -> list[np.ndarray]:
    prepare = found.settings.prepare
    limits = DecodeLimits.from_settings(prepare)
    count = found.bundle.metadata["frames_per_video"]
    _, frames = extract_frames(path, count=count, timeout_s=prepare.ffmpeg_timeout_s, limits=limits)
    return [frame.rgb for frame in frames]


def _reencode(source: str, target: Path, crf: int) -> str:
    (
        ffmpeg.input(source)
        .output(str(target), vcodec="libx264", crf=crf, preset="medium", pix_fmt="yuv420p", an=None)
        .overwrite_output()
        .run(cmd=ffmpeg_exe(), quiet=True)
    )
    return str(target)


# -- comparison --------------------------------------------------------------------------------------
def compare(probabilities: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray, threshold: float) -> dict:
    """AUC and accuracy per condition, each condition's AUC drop from clean with a paired bootstrap interval."""
    clean = probabilities["clean"]
    rng = np.random.default_rng(0)
    units = np.unique(groups)
    members = [np.flatnonzero(groups == unit) for unit in units]
    resamples = []
    while len(resamples) < BOOTSTRAP:
        rows = np.concatenate([members[i] for i in rng.integers(0, len(units), len(units))])
        if len(np.unique(labels[rows])) == 2:
            resamples.append(rows)
    conditions = {}
    for name, probs in probabilities.items():
        drops = [roc_auc_score(labels[r], clean[r]) - roc_auc_score(labels[r], probs[r]) for r in resamples]
        auc = float(roc_auc_score(labels, probs))
        conditions[name] = {
            "auc": auc,
            "auc_drop": float(roc_auc_score(labels, clean)) - auc,
            "auc_drop_95": [float(np.percentile(drops, 2.5)), float(np.percentile(drops, 97.5))],
            "accuracy": float(np.mean((probs >= threshold) == labels)),
        }
    return {"clean_auc": conditions["clean"]["auc"], "conditions": conditions, "threshold": threshold}


def summarise(datasets: dict[str, dict]) -> dict:
    perturbations = {
        f"{dataset}/{name}": {k: result[k] for k in ("auc", "auc_drop", "auc_drop_95", "accuracy")}
        for dataset, found in datasets.items()
        for name, result in found["conditions"].items()
        if name not in ("clean", "format_control")
    }
    control = {
        dataset: {
            "accuracy_clean": found["conditions"]["clean"]["accuracy"],
            "accuracy_reencoded": found["conditions"]["format_control"]["accuracy"],
            "accuracy_change": found["conditions"]["format_control"]["accuracy"]
            - found["conditions"]["clean"]["accuracy"],
        }
        for dataset, found in datasets.items()
    }
    max_drop = max(p["auc_drop"] for p in perturbations.values())
    worst_control = max(abs(c["accuracy_change"]) for c in control.values())
    return {
        "clean_auc": {dataset: found["clean_auc"] for dataset, found in datasets.items()},
        "perturbations": perturbations,
        "max_auc_drop": max_drop,
        "format_control": control | {"reencoding": FORMAT_CONTROL},
        "targets": {
            "max_auc_drop": MAX_AUC_DROP,
            "auc_drop_met": max_drop <= MAX_AUC_DROP,
            "missed_by": {
                name: p["auc_drop"] - MAX_AUC_DROP for name, p in perturbations.items() if p["auc_drop"] > MAX_AUC_DROP
            },  # fmt: skip
            "max_accuracy_change": MAX_ACCURACY_CHANGE,
            "format_control_met": worst_control <= MAX_ACCURACY_CHANGE,
        },
        "datasets": datasets,
    }


def describe(found: World, config: Path) -> dict:
    run = found.store.db["training_runs"].find_one({"_id": found.ref.run_id}) or {}
    return {
        "config": config.name,
        "version": found.ref.version,
        "trained_now": found.trained_s is not None,
        "train_stage_s": round(run.get("seconds", {}).get("total", float("nan")), 1),
        "image_size": found.settings.model.image_size,
        "augmentation": found.settings.model.augmentation,
        "test_frame_metrics": {k: run.get("metrics", {}).get(k) for k in ("accuracy", "roc_auc", "n")},
        "model": model_location(found.settings),
    }


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


if __name__ == "__main__":
    main()
