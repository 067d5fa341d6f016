"""The train stage: manifest -> two-phase training -> calibration -> evaluation -> registry."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.aggregate import aggregate, choose_rule
from pipeline.model.bundle import ModelBundle, load_bundle, save_bundle
from pipeline.model.calibration import fit_calibration, with_band_edges
from pipeline.model.data import frame_dataset
from pipeline.model.evaluate import binary_metrics, save_plots
from pipeline.model.onnx_export import keras_logits
from pipeline.model.train import HEAD, train_two_phase
from pipeline.settings import Settings
from pipeline.store import ResultStore

if TYPE_CHECKING:
    import keras

PROMOTION_METRIC = "roc_auc"


class NoDatasetError(LookupError):
    """Training was asked for but no prepared dataset exists."""


def resolve_dataset(store: ResultStore, dataset_id: str | None) -> dict:
    dataset = store.dataset(dataset_id) if dataset_id else store.latest_dataset()
    if dataset is None:
        raise NoDatasetError(
            f"dataset {dataset_id!r} not found" if dataset_id else "no prepared dataset: run the prepare stage first"
        )
    return dataset


def split_logits(
    predictor: ModelBundle | keras.Model, manifest: pd.DataFrame, split: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for one split, read through the same input pipeline as training."""
    rows = manifest[manifest["split"] == split]
    predict = predictor.logits if isinstance(predictor, ModelBundle) else partial(keras_logits, predictor)
    logits = [predict(np.asarray(x)) for x, _ in frame_dataset(rows, batch_size=batch_size, training=False, seed=0)]
    return (np.concatenate(logits) if logits else np.zeros(0)), rows["label"].to_numpy()


def run(settings: Settings, store: ResultStore, *, dataset_id: str | None = None) -> dict:
    """Train, calibrate on validation, evaluate on test, register, and maybe promote."""
    dataset = resolve_dataset(store, dataset_id)
    manifest = pd.read_parquet(dataset["manifest_path"])
    model_settings = settings.model
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="train-", dir=_ensure(settings.storage.root / "runs")))
    with tracking.training_run(
        settings, dataset=dataset, run_name=f"{model_settings.backbone}-{dataset['_id']}"
    ) as run_id:
        epochs_before = {HEAD: 0, "fine_tune": model_settings.head_epochs}
        outcome = train_two_phase(
            manifest,
            model_settings,
            workdir=workdir,
            seed=settings.prepare.seed,
            on_epoch=lambda phase, epoch, logs: tracking.log_metrics(
                logs, step=epochs_before[phase] + epoch, prefix=f"{phase}_"
            ),
        )
        if outcome.weight_mean:
            tracking.log_metrics(outcome.weight_mean, prefix="weight_mean_")
        val_logits, val_labels = split_logits(outcome.model, manifest, "val", model_settings.batch_size)
        calibration = fit_calibration(val_logits, val_labels, max_fpr_real=model_settings.max_fpr_real)
        aggregation, aggregation_aucs, calibration = _media_level(
            calibration, manifest, val_logits, model_settings.max_fpr_real
        )
        tracking.log_metrics({f"val_media_auc_{name}": auc for name, auc in aggregation_aucs.items()})
        test_logits, test_labels = split_logits(outcome.model, manifest, "test", model_settings.batch_size)
        test_probs = calibration.probability(test_logits)
        metrics = binary_metrics(test_labels, test_probs, calibration.threshold)
        tracking.log_metrics(metrics, prefix="test_")
        tracking.log_metrics(calibration.to_dict(), prefix="calibration_")
        test_rows = manifest[manifest["split"] == "test"]
        save_plots(test_labels, test_probs, calibration.threshold, test_rows["frame_path"].tolist(), workdir / "plots")
        tracking.log_artifacts(workdir / "plots", "plots")
        serving = outcome.model
        check_frames = next(iter(frame_dataset(test_rows.head(16), batch_size=16, training=False, seed=0)))[0]
        metadata = _bundle_metadata(settings, dataset, aggregation)
        bundle_dir = save_bundle(
            workdir / "bundle", serving, calibration, metadata, check_frames=np.asarray(check_frames)
        )
        ref = tracking.register_bundle(settings, serving, bundle_dir)
        promoted, rule = _promote_if_better(settings, ref, metrics, manifest)
        tracking.log_dict({"rule": rule, "promoted": promoted}, "promotion.json")
        tracking.log_dict(outcome.accelerator, "accelerator.json")
        document = {
            "_id": run_id,
            "model": {"name": ref.name, "version": ref.version},
            "dataset_id": dataset["_id"],
            "manifest_hash": dataset["manifest_hash"],
            "config_hash": settings.config_hash(),
            "backbone": model_settings.backbone,
            "image_size": model_settings.image_size,
            "metrics": metrics,
            "calibration": calibration.to_dict(),
            "aggregation": aggregation,
            "unfrozen_blocks": outcome.unfrozen_blocks,
            "history": outcome.history,
            "weight_mean": outcome.weight_mean,
            "accelerator": outcome.accelerator,
            "seconds": {**outcome.seconds, "total": time.perf_counter() - started},
            "promoted": promoted,
            "promotion_rule": rule,
            "tracking_uri": tracking.configure(settings),
        }
        store.record_training_run(document)
    return document


def _media_level(calibration, manifest: pd.DataFrame, val_logits: np.ndarray, max_fpr_real: float):
    """Choose the aggregation rule and the verdict band edges on whole validation media."""
    rows = manifest[manifest["split"] == "val"].assign(prob=calibration.probability(val_logits))
    items = [group for _, group in rows.groupby("content_id")]
    labels = np.array([int(group["label"].iloc[0]) for group in items])
    frame_scores = [group["prob"].to_numpy() for group in items]
    rule, aucs = choose_rule(frame_scores, labels)
    media_scores = np.array([aggregate(scores, rule) for scores in frame_scores])
    return rule, aucs, with_band_edges(calibration, media_scores, labels, max_fpr_real=max_fpr_real)


def _promote_if_better(
    settings: Settings, ref: tracking.ModelRef, metrics: dict, manifest: pd.DataFrame
) -> tuple[bool, str]:
    """Move ``champion`` to the new version only if it beats the champion on this same test set."""
    current = tracking.champion(settings)
    new_score = metrics.get(PROMOTION_METRIC, float("nan"))
    if current is None:
        tracking.promote(ref, reason="first registered model")
        return True, "no champion yet: the first model becomes champion"
    champion = load_bundle(tracking.download_bundle(current))
    logits, labels = split_logits(champion, manifest, "test", settings.model.batch_size)
    old_score = binary_metrics(labels, champion.calibration.probability(logits), champion.calibration.threshold).get(
        PROMOTION_METRIC, float("nan")
    )
    rule = (
        f"test {PROMOTION_METRIC} of v{ref.version} = {new_score:.4f} vs champion v{current.version} = "
        f"{old_score:.4f} on the same test split; promote only if strictly higher"
    )
    if new_score > old_score or np.isnan(old_score):
        tracking.promote(ref, reason=rule)
        return True, rule
    return False, rule


def _bundle_metadata(settings: Settings, dataset: dict, aggregation: str) -> dict:
    return {
        "backbone": settings.model.backbone,
        "image_size": settings.model.image_size,
        "test_time_flip": settings.model.test_time_flip,
        "frame_size": dataset["frame_size"],
        "resize_policy": dataset["resize_policy"],
        "crop": dataset.get("crop", "full"),
        "frames_per_video": dataset["frames_per_video"],
        "dataset_id": dataset["_id"],
        "config_hash": settings.config_hash(),
        "aggregation": aggregation,
    }


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
