"""Video-level quality on FaceForensics++ clips, leave-one-group-out (issue: Score).

Only FF++ originals and their Deepfakes/FaceSwap manipulations are used (18 clips in three
source pairs): the UCF101 .avi clips are all real and differ in container and resolution, so
they would reward format detection. Frames come from the product's prepare stage (32 uniform
frames, 256 px) in four variants: full frames under each resize policy, and face crops (OpenCV's
Haar detector). A frame-level classifier, logistic regression on frozen ImageNet
EfficientNet-Lite0 features (224 px), is trained on two groups and scores the third. Frame scores
are aggregated per video by each rule and judged on the held-out group only.

Usage: .venv/bin/python bench/video_quality_bench.py   (writes bench/results/video_quality.json)
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.aggregate import RULES, aggregate
from pipeline.media.faces import largest_face
from pipeline.media.video import extract_frames
from pipeline.model.backbones import build_backbone
from pipeline.model.data import frame_dataset
from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare
from pipeline.store import ResultStore

VIDEOS = PROJECT_ROOT.parent / "shared" / "datasets" / "videos"
RESULTS = PROJECT_ROOT / "bench" / "results" / "video_quality.json"
VARIANTS = {
    "full_letterbox": {"crop": "full", "resize_policy": "letterbox"},
    "full_squash": {"crop": "full", "resize_policy": "squash"},
    "full_center_crop": {"crop": "full", "resize_policy": "center_crop"},
    "face_letterbox": {"crop": "face", "resize_policy": "letterbox"},
}
FRAMES, FEATURE_SIZE = 32, 224


def ff_clips() -> list[dict]:
    with (VIDEOS / "MANIFEST.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [r for r in rows if r["group"].startswith("ff_pair_")]


def make_source(clips: list[dict], folder: Path) -> Path:
    folder.mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label", "group"])
        for clip in clips:
            name = Path(clip["file"]).name
            shutil.copy(VIDEOS / clip["file"], folder / name)
            writer.writerow([name, int(clip["label"] == "fake"), clip["group"]])
    return folder


def feature_extractor() -> keras.Model:
    inputs = keras.Input((256, 256, 3))
    x = keras.layers.Resizing(FEATURE_SIZE, FEATURE_SIZE)(inputs)
    x = build_backbone("efficientnet_lite0", weights="imagenet", image_size=FEATURE_SIZE)(x, training=False)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def leave_one_group_out(manifest: pd.DataFrame, features: np.ndarray, groups: dict[str, str]) -> dict:
    """Out-of-fold frame probabilities, then video scores per rule, judged on held-out groups.

    ``groups`` maps clip file names to their MANIFEST.tsv source pair.
    """
    file_names = manifest["source_uri"].str.rsplit("/", n=1).str[-1]
    manifest = manifest.assign(group=file_names.map(groups), prob=np.nan)
    for held_out in sorted(manifest["group"].unique()):
        train = (manifest["group"] != held_out).to_numpy()
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, class_weight="balanced", max_iter=5000))
        classifier.fit(features[train], manifest.loc[train, "label"])
        manifest.loc[~train, "prob"] = classifier.predict_proba(features[~train])[:, 1]
    videos = manifest.groupby("content_id")
    labels = videos["label"].first().to_numpy()
    video_groups = videos["group"].first().to_numpy()
    result = {"frame_auc": round(float(roc_auc_score(manifest["label"], manifest["prob"])), 4), "videos": len(labels)}
    result["video_auc"], result["video_accuracy"], result["per_group_auc"] = {}, {}, {}
    for rule in RULES:
        scores = np.array([aggregate(group["prob"].to_numpy(), rule) for _, group in videos])
        result["video_auc"][rule] = round(float(roc_auc_score(labels, scores)), 4)
        result["video_accuracy"][rule] = round(float(accuracy_score(labels, scores >= 0.5)), 4)
        result["per_group_auc"][rule] = {
            g: round(float(roc_auc_score(labels[video_groups == g], scores[video_groups == g])), 4)
            for g in sorted(set(video_groups))
        }
    return result


def face_found_share(clips: list[dict]) -> float:
    found = total = 0
    for clip in clips:
        _, frames = extract_frames(str(VIDEOS / clip["file"]), count=FRAMES, timeout_s=120)
        found += sum(largest_face(f.rgb) is not None for f in frames)
        total += len(frames)
    return round(found / total, 4)


def main() -> None:
    clips = ff_clips()
    work = Path(tempfile.mkdtemp(prefix="video-quality-"))
    extractor = feature_extractor()
    variants = {}
    try:
        source = make_source(clips, work / "source")
        groups = {Path(c["file"]).name: c["group"] for c in clips}
        with embedded_mongo(":memory:") as uri:
            store = ResultStore.from_uri(uri, database="bench")
            for name, prepare_overrides in VARIANTS.items():
                settings = load_settings(
                    storage={"root": work / name, "incoming_uri": (work / "in").as_uri()},
                    prepare={"frames_per_video": FRAMES, "max_frames_per_video": FRAMES, **prepare_overrides},
                )
                started = time.perf_counter()
                summary = prepare.run(settings, store, str(source))
                prepare_s = time.perf_counter() - started
                manifest = pd.read_parquet(summary["manifest"])
                started = time.perf_counter()
                features = np.concatenate(
                    [
                        extractor.predict_on_batch(x)
                        for x, _ in frame_dataset(manifest, batch_size=32, training=False, seed=0)
                    ]
                )
                features_s = time.perf_counter() - started
                variants[name] = {
                    **prepare_overrides,
                    **leave_one_group_out(manifest, features, groups),
                    "frames": len(manifest),
                    "prepare_s": round(prepare_s, 1),
                    "features_s": round(features_s, 1),
                }
                print(name, json.dumps(variants[name]["video_auc"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "clips": len(clips),
        "groups": sorted({c["group"] for c in clips}),
        "frames_per_video": FRAMES,
        "classifier": "logistic regression (C=0.05, balanced classes) on frozen ImageNet EfficientNet-Lite0 "
        f"features at {FEATURE_SIZE} px",
        "evaluation": "leave-one-group-out: train on two source pairs, score the third; pooled over the three folds",
        "face_found_share": face_found_share(clips),
        "variants": variants,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "variants"}, indent=2))


if __name__ == "__main__":
    main()
