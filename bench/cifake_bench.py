"""CIFAKE training benchmark on real data from ../shared/datasets (issue: Train and evaluate).

Runs the product's own stages, nothing bench-specific: prepare CIFAKE's train and test
folders (the official test split is honoured as given; validation is carved from train by
group), then the train stage (two-phase fine-tuning, calibration on validation, evaluation on
test, ONNX export, MLflow registry). The served bundle then scores all 20,000 official test
files exactly as the score stage would (decode, resize, ONNX Runtime), duplicates included, and
its confusion matrix and ROC curve are saved for the README.

Usage: .venv/bin/python bench/cifake_bench.py [--config bench/cifake_96_mean.yaml] [--name cifake] [--limit N] [--keep]
       (writes bench/results/<name>.json and bench/results/<name>/*.png; with --keep, says where the model is)
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
from pathlib import Path

import numpy as np
from kept_models import add_keep_flag, model_location, print_kept
from prepare_bench import extract_cifake

from pipeline import tracking
from pipeline.media.images import decode_image
from pipeline.model.bundle import load_bundle
from pipeline.model.evaluate import binary_metrics, save_plots
from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, load_settings
from pipeline.stages import prepare, score, train
from pipeline.store import ResultStore

RESULTS = PROJECT_ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "bench" / "cifake_96_mean.yaml"))
    parser.add_argument("--limit", type=int, help="use an even sample of this many files (smoke runs)")
    parser.add_argument("--name", default="cifake", help="results name: bench/results/<name>.json")
    add_keep_flag(parser)
    args = parser.parse_args()
    os.environ["MEDIACHECK_CONFIG"] = args.config
    work = Path(tempfile.mkdtemp(prefix="cifake-bench-"))
    try:
        result = run(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))
    if args.keep:
        print_kept(work, {"cifake": result["model"]})


def run(work: Path, args: argparse.Namespace) -> dict:
    files = extract_cifake(work / "cifake", args.limit)
    settings = load_settings(storage={"root": work / "data", "incoming_uri": (work / "in").as_uri()})
    with embedded_mongo(":memory:") as uri:
        store = ResultStore.from_uri(uri, database="bench")
        started = time.perf_counter()
        summary = prepare.run(settings, store, str(work / "cifake"))
        prepare_s = time.perf_counter() - started
        print(f"prepared {summary['kept']} of {len(files)} files in {prepare_s:.0f} s: {summary['splits']}", flush=True)
        started = time.perf_counter()
        document = train.run(settings, store)
        train_wall_s = time.perf_counter() - started
        test_files = [f for f in files if Path(f).relative_to(work / "cifake").parts[0] == "test"]
        served = served_test_metrics(settings, test_files, RESULTS / args.name)
    model = settings.model
    return {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "config": Path(args.config).name,
        "backbone": model.backbone,
        "weights": model.weights,
        "image_size": model.image_size,
        "batch_size": model.batch_size,
        "head_epochs": model.head_epochs,
        "fine_tune_epochs": model.fine_tune_epochs,
        "epochs_run": {phase: len(h["loss"]) for phase, h in document["history"].items()},
        "unfrozen_blocks": len(document["unfrozen_blocks"]),
        "fine_tune_schedule": model.fine_tune_schedule,
        "augmentation": model.augmentation,
        "test_time_flip": model.test_time_flip,
        "weight_averaging": model.weight_averaging,
        "label_smoothing": model.label_smoothing,
        "checkpoint_metric": model.checkpoint_metric,
        "average_last_epochs": model.average_last_epochs,
        "files": len(files),
        "prepare": {k: summary[k] for k in ("kept", "duplicate", "quarantined", "splits")},
        "prepare_s": round(prepare_s, 1),
        "train_wall_s": round(train_wall_s, 1),
        "train_phase_s": {k: round(v, 1) for k, v in document["seconds"].items()},
        "work": str(work) if args.keep else None,
        "model": model_location(settings) if args.keep else None,
        "test_images": int(served["n"]),
        "accuracy": served["accuracy"],
        "roc_auc": served["roc_auc"],
        "tpr_at_5pct_fpr": served["tpr_at_5pct_fpr"],
        "average_precision": served["average_precision"],
        "log_loss": served["log_loss"],
        "threshold": served["threshold"],
        "confusion": {k: int(served[k]) for k in ("tn", "fp", "fn", "tp")},
        "runtime": served["runtime"],
        "train_stage_test_metrics": document["metrics"],
        "weight_mean": document["weight_mean"],
        "history": document["history"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def served_test_metrics(settings, test_files: list[str], plots: Path) -> dict:
    """The registered bundle on every official test file, read the way the score stage reads media."""
    bundle = load_bundle(tracking.bundle_folder(settings, tracking.champion(settings)))
    labels = np.array([int(Path(f).parent.name.upper() == "FAKE") for f in test_files])
    probs = np.concatenate(
        [
            bundle.probabilities(
                np.stack([score.model_frame(decode_image(Path(f).read_bytes())[0], bundle) for f in chunk]),
                batch_size=256,
            )
            for chunk in (test_files[i : i + 1024] for i in range(0, len(test_files), 1024))
        ]
    )
    threshold = bundle.calibration.threshold
    written = save_plots(labels, probs, threshold, test_files, plots)
    for path in written:
        if path.name == "worst_errors.png":  # made of dataset images: shared data is never committed
            path.unlink()
    return binary_metrics(labels, probs, threshold) | {"runtime": bundle.runtime}


if __name__ == "__main__":
    main()
