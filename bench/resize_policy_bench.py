"""Resize-policy comparison on non-square images (issue: Train and evaluate).

CIFAKE is square, so `squash`, `letterbox` and `center_crop` give identical frames on it. Here
every CIFAKE image is first cut to a camera-like aspect ratio (4:3, 3:4, 16:9 or 9:16, a seeded
random window, saved losslessly as PNG; both classes alike), so the policies really differ:
squash warps, letterbox pads, center_crop drops the edges. For each policy the product's own
stages run on the same files: prepare (official train/test folders honoured, validation carved
from train by group), then the train stage (head, then a short full fine-tune at 64 px), which
reports accuracy and ROC-AUC on the test split. 95% intervals are bootstrap over test images.

Usage: .venv/bin/python bench/resize_policy_bench.py [--train N] [--test N] [--keep]
       (writes bench/results/resize_policy.json; with --keep, says where each policy's model is)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from kept_models import add_keep_flag, model_location, print_kept
from PIL import Image
from prepare_bench import extract_cifake
from sklearn.metrics import roc_auc_score

from pipeline import tracking
from pipeline.media.images import decode_jpeg
from pipeline.model.bundle import load_bundle
from pipeline.model.evaluate import binary_metrics
from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare, train
from pipeline.store import ResultStore

RESULTS = PROJECT_ROOT / "bench" / "results" / "resize_policy.json"
POLICIES = ("letterbox", "squash", "center_crop")
WINDOWS = ((32, 24), (24, 32), (32, 18), (18, 32))  # (width, height): 4:3, 3:4, 16:9, 9:16
MODEL = {
    "backbone": "efficientnet_lite0",
    "weights": "imagenet",
    "image_size": 64,
    "batch_size": 128,
    "head_epochs": 1,
    "fine_tune_epochs": 2,
    "fine_tune_learning_rate": 2.0e-4,
    "fine_tune_schedule": "cosine",
    "unfreeze_blocks": 99,
    "augmentation": "light",
    "early_stopping_patience": 10,
}


def non_square_copy(files: list[str], source: Path, target: Path) -> None:
    """Cut each image to a seeded random camera-aspect window, keeping its folder (split, label)."""
    for file in files:
        relative = Path(file).relative_to(source)
        seed = zlib.crc32(str(relative).encode())
        width, height = WINDOWS[seed % len(WINDOWS)]
        image = Image.open(file).convert("RGB")
        rng = np.random.default_rng(seed)
        left, top = rng.integers(0, image.width - width + 1), rng.integers(0, image.height - height + 1)
        out = (target / relative).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        image.crop((left, top, left + width, top + height)).save(out)


def even_sample(files: list[str], split: str, count: int) -> list[str]:
    chosen = [f for f in files if f"/{split}/" in f]
    return chosen[:: max(1, len(chosen) // count)][:count]


def bootstrap_interval(labels: np.ndarray, correct: np.ndarray, probs: np.ndarray, rounds: int = 500) -> dict:
    rng = np.random.default_rng(0)
    accuracies, aucs = [], []
    for _ in range(rounds):
        pick = rng.integers(0, len(labels), len(labels))
        accuracies.append(correct[pick].mean())
        aucs.append(roc_auc_score(labels[pick], probs[pick]))
    return {
        "accuracy_95": [round(float(np.percentile(accuracies, q)), 4) for q in (2.5, 97.5)],
        "roc_auc_95": [round(float(np.percentile(aucs, q)), 4) for q in (2.5, 97.5)],
    }


def run_policy(policy: str, source: Path, work: Path, keep: bool) -> dict:
    settings = load_settings(
        storage={"root": work / "data", "incoming_uri": (work / "in").as_uri()},
        prepare={"resize_policy": policy},
        model=MODEL,
    )
    with embedded_mongo(":memory:") as uri:
        store = ResultStore.from_uri(uri, database="bench")
        started = time.perf_counter()
        summary = prepare.run(settings, store, str(source))
        prepare_s = time.perf_counter() - started
        started = time.perf_counter()
        document = train.run(settings, store)
        train_s = time.perf_counter() - started
    labels, probs = served_test_scores(settings, summary["manifest"])
    metrics = binary_metrics(labels, probs, document["calibration"]["threshold"])
    return {
        "policy": policy,
        "splits": summary["splits"],
        "prepare_s": round(prepare_s, 1),
        "train_s": round(train_s, 1),
        "accuracy": round(metrics["accuracy"], 4),
        "roc_auc": round(metrics["roc_auc"], 4),
        "tpr_at_5pct_fpr": round(metrics["tpr_at_5pct_fpr"], 4),
        **bootstrap_interval(labels, (probs >= metrics["threshold"]) == labels, probs),
        "model": model_location(settings) if keep else None,
    }


def served_test_scores(settings, manifest_path: str) -> tuple[np.ndarray, np.ndarray]:
    """The registered bundle's probabilities on the stored test frames of this policy."""
    bundle = load_bundle(tracking.bundle_folder(settings, tracking.champion(settings)))
    test = pd.read_parquet(manifest_path).query("split == 'test'")
    paths = test["frame_path"].tolist()
    probs = np.concatenate(
        [
            bundle.probabilities(
                np.stack([decode_jpeg(Path(p).read_bytes()) for p in paths[i : i + 1024]]), batch_size=256
            )
            for i in range(0, len(paths), 1024)
        ]
    )
    return test["label"].to_numpy(), probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20_000, help="training images (an even sample)")
    parser.add_argument("--test", type=int, default=20_000, help="test images (an even sample)")
    add_keep_flag(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resize-policy-bench-"))
    try:
        files = extract_cifake(work / "cifake")
        chosen = even_sample(files, "train", args.train) + even_sample(files, "test", args.test)
        non_square_copy(chosen, work / "cifake", work / "source")
        shutil.rmtree(work / "cifake")
        results = [run_policy(policy, work / "source", work / policy, args.keep) for policy in POLICIES]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    best = max(results, key=lambda r: (r["roc_auc"], r["accuracy"]))
    output = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "windows": [f"{w}x{h}" for w, h in WINDOWS],
        "train_images": args.train,
        "test_images": args.test,
        "work": str(work) if args.keep else None,
        "model": MODEL,
        "results": results,
        "best": best["policy"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(output, indent=2) + "\n")
    print(json.dumps(output, indent=2))
    if args.keep:
        print_kept(work, {result["policy"]: result["model"] for result in results})


if __name__ == "__main__":
    main()
