"""Trust benchmark: how often a trained detector is confidently wrong, inside and outside its training data.

Two models, trained by the product's own stages on the real data in ../shared/datasets:

* ``cifake``: EfficientNet-Lite0 fine-tuned on CIFAKE (``bench/cifake_96_robust.yaml``);
* ``video``: EfficientNet-Lite0 on the 40 shared clips with face crops, defaults otherwise
  (``bench/trust_video.yaml``), its held-out groups pinned so that both classes are tested.

Each model scores media sets through the score stage's own code (``score.score_content``: frames,
ONNX Runtime, calibration, aggregation, the out-of-distribution checks, provenance). Per set:
coverage (share of media with a confident verdict), accuracy of the confident verdicts and the
confident-wrong rate (confidently wrong verdicts over all media), with abstention (the product's
verdict) and without (the band of the model's score alone). It also says which check abstained
(feature space, input statistics) and how well each out-of-distribution method separates the
model's in-distribution set from each other set (ROC-AUC), so the method is chosen by measurement.

Usage: .venv/bin/python bench/trust_bench.py [--work DIR] [--retrain] [--limit N]
Writes bench/results/trust.json. The trained models are always kept under --work (default
.data/bench/trust: storage roots with their MLflow stores, and the MongoDB data) and reused by the
next run unless --retrain is given; the run ends by saying where each is (also in the JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import skimage.data
from kept_models import model_location, print_kept
from prepare_bench import extract_cifake
from sklearn.metrics import roc_auc_score

from pipeline import tracking
from pipeline.media.images import MediaError
from pipeline.media.sniff import SNIFF_BYTES, sniff_kind
from pipeline.model.bundle import ModelBundle, load_bundle
from pipeline.model.calibration import with_band_edges
from pipeline.model.onnx_export import EMBEDDING, LOGIT
from pipeline.model.ood import KnnDistance, media_score
from pipeline.services import mongo_uri
from pipeline.settings import PROJECT_ROOT, Settings, load_settings
from pipeline.stages import prepare, score, train
from pipeline.store import ResultStore
from pipeline.synthetic import drop_incoming, make_labelled_set
from pipeline.verdicts import OUTSIDE, selective_metrics

SHARED = PROJECT_ROOT.parent / "shared" / "datasets"
RESULTS = PROJECT_ROOT / "bench" / "results"
CONFIGS = {
    "cifake": PROJECT_ROOT / "bench" / "cifake_96_robust.yaml",
    "video": PROJECT_ROOT / "bench" / "trust_video.yaml",
}
# The photographs that ship with scikit-image (not its drawings, scans or synthetic patterns).
SKIMAGE_PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "brick", "moon",
                  "rocket", "retina", "hubble_deep_field", "immunohistochemistry", "page", "text", "clock")  # fmt: skip
VIDEO_ON_CIFAKE_SAMPLE = 2000
BAND_BUDGETS = (0.005, 0.01, 0.02, 0.05)
TARGETS = {"out_confident_wrong_max": 0.05, "cifake_coverage_min": 0.90, "cifake_confident_accuracy_min": 0.99}


@dataclass
class World:
    """One trained model with its store, dataset and served bundle."""

    name: str
    settings: Settings
    store: ResultStore
    dataset: dict
    manifest: pd.DataFrame
    bundle: ModelBundle
    ref: tracking.ModelRef
    trained_s: float | None
    alternatives: dict = field(default_factory=dict)  # OOD method -> (score function, threshold)


def world_arguments(description: str, work: Path) -> argparse.Namespace:
    """The command line of a benchmark over kept models (``--work``, ``--retrain``, ``--limit``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=work)
    parser.add_argument("--retrain", action="store_true", help="train both models again even if kept ones exist")
    parser.add_argument(
        "--limit", type=int, help="CIFAKE files to use (smoke runs; the results are then not meaningful)"
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"the shared datasets are not at {SHARED}")
    args.work.mkdir(parents=True, exist_ok=True)
    return args


def main() -> None:
    args = world_arguments(__doc__.splitlines()[0], PROJECT_ROOT / ".data" / "bench" / "trust")
    with mongo_uri(None, args.work / "mongo") as store_uri:  # reuses a server already running on that store
        worlds = {name: world(name, config, args, store_uri) for name, config in CONFIGS.items()}
        for found in worlds.values():
            found.alternatives = alternative_detectors(found)
        sets = media_sets(args.work, worlds)
        results = {
            name: run_set(worlds[model], media, distribution) for name, (model, distribution, media) in sets.items()
        }
        methods = {name: compare_methods(found, results) for name, found in worlds.items()}
        budgets = band_budgets(worlds["cifake"], results["cifake_test"]["rows"])
        report = {
            "command": " ".join([".venv/bin/python", *sys.argv]),
            "work": str(args.work),
            "models": {name: describe(w) for name, w in worlds.items()},
            "sets": {name: {k: v for k, v in r.items() if k != "rows"} for name, r in results.items()},
            "ood_methods": methods,
            "band_budgets": budgets,
            "targets": targets(results),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "trust.json").write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    print(json.dumps({k: report[k] for k in ("sets", "targets")}, indent=2))
    print_kept(args.work, {name: model["model"] for name, model in report["models"].items()})


def _finite(value):
    """NaN (no confident verdict to count) and infinity as null: the JSON stays standard."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


# -- models ------------------------------------------------------------------------------------------
def world(name: str, config: Path, args: argparse.Namespace, store_uri: str) -> World:
    """The kept model of this name under ``args.work``, or a new one trained by the product's
    prepare and train stages with ``config`` (``name`` is ``cifake`` or ``video``: the data)."""
    os.environ["MEDIACHECK_CONFIG"] = str(config)
    root = args.work / name
    settings = load_settings(storage={"root": root / "data", "incoming_uri": (root / "incoming").as_uri()})
    store = ResultStore.from_uri(store_uri, database=f"trust_{name}")
    trained_s = None
    # Decided before MLflow opens its database: removing an open SQLite store leaves it read-only.
    kept = (root / "data" / "mlflow.db").exists() and store.latest_dataset() is not None
    if args.retrain or not kept:
        shutil.rmtree(root, ignore_errors=True)
        store.client.drop_database(store.db.name)
        source = cifake_source(root / "source", args.limit) if name == "cifake" else video_source(root / "source")
        started = time.perf_counter()
        summary = prepare.run(settings, store, str(source))
        print(f"{name}: prepared {summary['kept']} media in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        train.run(settings, store)
        trained_s = round(time.perf_counter() - started, 1)
        print(f"{name}: trained in {trained_s:.0f} s", flush=True)
    ref = tracking.champion(settings)
    if ref is None:
        sys.exit(f"{name}: no champion model under {root}: run again with --retrain")
    dataset = store.latest_dataset()
    return World(name, settings, store, dataset, pd.read_parquet(dataset["manifest_path"]),
                 load_bundle(tracking.bundle_folder(settings, ref)), ref, trained_s)  # fmt: skip


def cifake_source(folder: Path, limit: int | None) -> Path:
    extract_cifake(folder, limit)
    return folder


def video_source(folder: Path) -> Path:
    """The shared clips with a labels.csv whose groups keep each source with its fakes, and pinned splits.

    Validation and test each get one FaceForensics++ source pair (its two originals and four
    manipulations) and some UCF101 clips, so that both classes are in both; the rest trains.
    """
    manifest = list(csv.DictReader((SHARED / "videos" / "MANIFEST.tsv").open(), delimiter="\t"))
    ucf = sorted({row["group"] for row in manifest if row["group"].startswith("ucf101")})
    splits = {"ff_pair_469-481": "val", "ff_pair_585-599": "test"}
    splits |= {group: "val" for group in ucf[1::5]} | {group: "test" for group in ucf[3::5]}
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label", "group", "split", "method"])
        for row in manifest:
            target = folder / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHARED / "videos" / row["file"], target)
            label = int(row["label"] == "fake")
            writer.writerow([row["file"], label, row["group"], splits.get(row["group"], "train"), row["method"]])
    return folder


def alternative_detectors(found: World) -> dict:
    """Every out-of-distribution method, fitted as the train stage fits the configured one, on the served bundle.

    ``knn`` is the product's (k from the reference count); ``knn_k1`` and ``knn_k50`` change only k.
    ``confidence`` is the baseline that needs no training data: minus the mean absolute logit
    (for a binary detector this orders media as the maximum softmax probability and the energy score do).
    Each threshold accepts the configured share of validation media, as the product's does.
    """
    rows = {split: found.manifest[found.manifest["split"] == split] for split in ("train", "val")}
    val = train.split_outputs(found.bundle, rows["val"], 256, (LOGIT, EMBEDDING))
    val_media = list(rows["val"].reset_index(drop=True).groupby("content_id").indices.values())
    accept = found.settings.model.ood_accept
    scorers = {}
    for method in ("knn", "mahalanobis"):
        model_settings = found.settings.model.model_copy(update={"ood_method": method})
        distribution, _ = train.describe_training_data(
            found.bundle, rows, val[EMBEDDING], model_settings, found.settings.prepare.seed
        )
        scorers[method] = partial(_feature_score, distribution.detector)
        if method == "knn":
            for k in (1, 50):
                scorers[f"knn_k{k}"] = partial(_feature_score, KnnDistance(distribution.detector.references, k=k))
    scorers["confidence"] = lambda out: -float(np.mean(np.abs(out[LOGIT])))
    detectors = {}
    for name, scorer in scorers.items():
        val_scores = [scorer({LOGIT: val[LOGIT][item], EMBEDDING: val[EMBEDDING][item]}) for item in val_media]
        detectors[name] = (scorer, float(np.quantile(val_scores, accept, method="higher")))
    return detectors


def _feature_score(detector, outputs: dict) -> float:
    return media_score(detector, outputs[EMBEDDING])[0]


def describe(found: World) -> dict:
    bundle = found.bundle
    run = found.store.db["training_runs"].find_one({"_id": found.ref.run_id}) or {}
    return {
        "config": CONFIGS[found.name].name,
        "version": found.ref.version,
        "dataset_id": found.dataset["_id"],
        "trained_now": found.trained_s is not None,
        "train_stage_s": round(run.get("seconds", {}).get("total", float("nan")), 1),
        "test_frame_metrics": {k: run.get("metrics", {}).get(k) for k in ("accuracy", "roc_auc", "n")},
        "test_media": run.get("trust"),
        "calibration": bundle.calibration.to_dict(),
        "ood": {k: v for k, v in (bundle.metadata.get("ood") or {}).items() if k != "input_profile"},
        "input_profile": (bundle.metadata.get("ood") or {}).get("input_profile"),
        "model": model_location(found.settings),
    }


# -- media sets --------------------------------------------------------------------------------------
def media_sets(work: Path, worlds: dict[str, World]) -> dict[str, tuple[str, str, list[tuple[str, int]]]]:
    """Set name -> (model, "in" or "out", [(path, label)])."""
    cifake_test = sorted((work / "cifake" / "source" / "test").rglob("*.jpg"))
    cifake_labelled = [(str(p), int(p.parent.name == "FAKE")) for p in cifake_test]
    rng = np.random.default_rng(0)
    sample = []
    for label in (0, 1):
        group = [m for m in cifake_labelled if m[1] == label]
        sample += [
            group[i]
            for i in sorted(rng.choice(len(group), min(len(group), VIDEO_ON_CIFAKE_SAMPLE // 2), replace=False))
        ]
    videos = [(str(SHARED / "videos" / row["file"]), int(row["label"] == "fake"))
              for row in csv.DictReader((SHARED / "videos" / "MANIFEST.tsv").open(), delimiter="\t")]  # fmt: skip
    video_test = worlds["video"].manifest.query("split == 'test'").drop_duplicates("content_id")
    return {
        "cifake_test": ("cifake", "in", cifake_labelled),
        "shared_videos": ("cifake", "out", videos),
        "demo_synthetic": ("cifake", "out", demo_media(work / "demo")),
        "skimage_photos": ("cifake", "out", skimage_photos(work / "skimage")),
        "video_heldout": (
            "video",
            "in",
            list(zip(video_test["source_uri"], video_test["label"].astype(int), strict=True)),
        ),
        "cifake_images": ("video", "out", sample),
    }


def demo_media(folder: Path) -> list[tuple[str, int]]:
    """The demo's synthetic labelled set and its unseen drops (the text file aside)."""
    shutil.rmtree(folder, ignore_errors=True)
    made = make_labelled_set(folder / "source")
    labelled = [(str(folder / "source" / row["file_name"]), int(row["label"]))
                for row in csv.DictReader(made.labels_csv.open())]  # fmt: skip
    drops = [p for p in drop_incoming(folder / "incoming") if p.name not in ("notes.mp4", "chart.jpg")]  # unlabelled
    return labelled + [(str(p), int("fake" in p.stem)) for p in drops]


def skimage_photos(folder: Path) -> list[tuple[str, int]]:
    """scikit-image's photographs as JPEG files (quality 95), all real camera or instrument images."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        path = folder / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])  # fmt: skip
        written.append((str(path), 0))
    return written


# -- scoring -----------------------------------------------------------------------------------------
def run_set(found: World, media: list[tuple[str, int]], distribution: str) -> dict:
    """Score every item with the product's scoring code; summarise with and without abstention."""
    rows, failed, started = [], 0, time.perf_counter()
    for index, (path, label) in enumerate(media):
        head = Path(path).read_bytes()[:SNIFF_BYTES]
        try:
            document, outputs = score.score_content(Path(path), sniff_kind(head), found.bundle, found.settings, {})
        except MediaError:
            failed += 1
            continue
        ood = document["ood"] or {}
        rows.append({
            "label": label,
            "verdict": document["verdict"],
            "reason": document["reason"],
            "basis": document["basis"],
            "model_verdict": document["model_verdict"],
            "probability": document["probability"],
            "feature_outside": bool(ood.get("feature_outside")),
            "input_outside": bool(ood.get("input_reasons")),
            "alternatives": {name: scorer(outputs) for name, (scorer, _) in found.alternatives.items()},
        })  # fmt: skip
        if (index + 1) % 2000 == 0:
            print(f"  {index + 1}/{len(media)} scored", flush=True)
    labels = [r["label"] for r in rows]
    with_abstention = selective_metrics(labels, [r["verdict"] for r in rows])
    without = selective_metrics(labels, [r["model_verdict"] for r in rows])
    features_only = selective_metrics(labels, [r["model_verdict"] if not r["feature_outside"] else "uncertain"
                                               for r in rows])  # fmt: skip
    print(f"{found.name} on {len(rows)} media ({distribution}): {with_abstention}", flush=True)
    return {
        "model": found.name,
        "distribution": distribution,
        **with_abstention,
        **{f"{k}_without_abstention": v for k, v in without.items() if k != "media"},
        **{f"{k}_features_only": v for k, v in features_only.items() if k != "media"},
        "outside": float(np.mean([r["reason"] == OUTSIDE for r in rows])) if rows else float("nan"),
        "outside_by_features": float(np.mean([r["feature_outside"] for r in rows])) if rows else float("nan"),
        "outside_by_input_statistics": float(np.mean([r["input_outside"] for r in rows])) if rows else float("nan"),
        "real_media": int(sum(1 - label for label in labels)),
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def compare_methods(found: World, results: dict) -> dict:
    """Per out-of-distribution method and set: the share of media beyond the method's threshold, the
    ROC-AUC of telling the set from the model's in-distribution set by the method's score, and the
    verdicts the product would give with that method (the input-statistics check included, and without)."""
    mine = {name: r for name, r in results.items() if r["model"] == found.name}
    inside = next(r for r in mine.values() if r["distribution"] == "in")
    methods = {}
    for method, (_, threshold) in found.alternatives.items():
        in_scores = [r["alternatives"][method] for r in inside["rows"]]
        per_set = {}
        for name, result in mine.items():
            rows = result["rows"]
            beyond = [r["alternatives"][method] > threshold for r in rows]
            labels = [r["label"] for r in rows]
            entry = {
                "beyond_threshold": float(np.mean(beyond)) if rows else None,
                "with_input_checks": selective_metrics(labels, [_verdict(r, b or r["input_outside"]) for r, b in
                                                                zip(rows, beyond, strict=True)]),
                "features_only": selective_metrics(labels, [_verdict(r, b) for r, b in zip(rows, beyond, strict=True)]),
            }  # fmt: skip
            if result is not inside and rows and in_scores:
                scores = [r["alternatives"][method] for r in rows]
                entry["roc_auc_vs_in"] = float(
                    roc_auc_score([0] * len(in_scores) + [1] * len(scores), in_scores + scores)
                )
            per_set[name] = entry
        methods[method] = {"threshold": threshold, "sets": per_set}
    return methods


def _verdict(row: dict, outside: bool) -> str:
    """The product's verdict for a scored row had the check said ``outside`` (provenance still first)."""
    if row["basis"] == "provenance":
        return row["verdict"]
    return "uncertain" if outside else row["model_verdict"]


def band_budgets(found: World, test_rows: list[dict]) -> dict:
    """CIFAKE test coverage and confident accuracy if the bands had been fitted with other error budgets."""
    val_rows = found.manifest[found.manifest["split"] == "val"]
    calibration = found.bundle.calibration
    probs = calibration.probability(train.split_outputs(found.bundle, val_rows, 256)[LOGIT])
    items = list(val_rows.reset_index(drop=True).groupby("content_id").indices.values())
    media_probs = np.array([probs[item].mean() for item in items])
    labels = val_rows["label"].to_numpy()[[item[0] for item in items]]
    outcome = {}
    for budget in BAND_BUDGETS:
        bands = with_band_edges(calibration, media_probs, labels, max_fpr_real=budget, max_fnr_fake=budget)
        verdicts = ["uncertain" if r["feature_outside"] or r["input_outside"] else bands.verdict(r["probability"])
                    for r in test_rows]  # fmt: skip
        outcome[f"{budget:g}"] = {"real_below": bands.real_below, "fake_from": bands.fake_from,
                                  **selective_metrics([r["label"] for r in test_rows], verdicts)}  # fmt: skip
    return outcome


def targets(results: dict) -> dict:
    outside = {name: r["confident_wrong_rate"] for name, r in results.items() if r["distribution"] == "out"}
    cifake = results["cifake_test"]
    return {
        "out_of_distribution_confident_wrong": outside,
        "out_of_distribution_met": all(v <= TARGETS["out_confident_wrong_max"] for v in outside.values()),
        "cifake_coverage": cifake["coverage"],
        "cifake_confident_accuracy": cifake["confident_accuracy"],
        "cifake_met": cifake["coverage"] >= TARGETS["cifake_coverage_min"]
        and cifake["confident_accuracy"] >= TARGETS["cifake_confident_accuracy_min"],
        "targets": TARGETS,
    }


if __name__ == "__main__":
    main()
