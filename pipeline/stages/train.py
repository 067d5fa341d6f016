"""The train stage: manifest -> two-phase training -> calibration -> evaluation -> registry."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from upath import UPath

from pipeline import storage, tracking
from pipeline.aggregate import aggregate, choose_rule
from pipeline.media.stats import MediaStats
from pipeline.model.bundle import ModelBundle, load_bundle, save_bundle
from pipeline.model.calibration import Calibration, fit_calibration, with_band_edges
from pipeline.model.card import model_card, render_card
from pipeline.model.data import frame_dataset
from pipeline.model.drift import DriftReference, MediaProfile
from pipeline.model.evaluate import binary_metrics, save_plots
from pipeline.model.onnx_export import EMBEDDING, LOGIT, concatenated, keras_outputs
from pipeline.model.ood import TrainingDistribution, fit_distribution
from pipeline.model.train import HEAD, train_two_phase
from pipeline.prepare.dataset import check_trainable
from pipeline.redact import redact
from pipeline.settings import ModelSettings, Settings
from pipeline.store import ResultStore
from pipeline.verdicts import OUTSIDE, decide, selective_metrics

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


def dataset_manifest(
    settings: Settings, dataset: dict, *, on_progress: Callable[[int, int], None] | None = None
) -> pd.DataFrame:
    """A recorded dataset's manifest, its frames on local disk: those under a URI root are fetched
    once into ``storage.local_root/cache/frames`` (``on_progress(done, total)`` follows them)."""
    with UPath(dataset["manifest_path"]).open("rb") as handle:
        manifest = pd.read_parquet(handle)
    cache = settings.storage.local_root / "cache" / "frames"
    manifest["frame_path"] = storage.local_copies(manifest["frame_path"].tolist(), cache, on_progress=on_progress)
    return manifest


def split_outputs(
    predictor: ModelBundle | keras.Model, rows: pd.DataFrame, batch_size: int, names: tuple[str, ...] = (LOGIT,)
) -> dict[str, np.ndarray]:
    """Served outputs for manifest rows, read through the same input pipeline as training."""
    if isinstance(predictor, ModelBundle):
        predict = partial(predictor.infer, batch_size=batch_size, outputs=names)
    else:
        predict = partial(keras_outputs, predictor, names=names)
    batches = [predict(np.asarray(x)) for x, _ in frame_dataset(rows, batch_size=batch_size, training=False, seed=0)]
    return concatenated(batches, names)


def split_logits(
    predictor: ModelBundle | keras.Model, manifest: pd.DataFrame, split: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for one split."""
    rows = manifest[manifest["split"] == split]
    return split_outputs(predictor, rows, batch_size)[LOGIT], rows["label"].to_numpy()


def run(
    settings: Settings,
    store: ResultStore,
    *,
    dataset_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Train, calibrate on validation, describe the training data, evaluate on test, register, maybe promote.

    ``on_progress(done, total)`` follows the frames fetched from a URI root before training.
    """
    dataset = resolve_dataset(store, dataset_id)
    manifest = dataset_manifest(settings, dataset, on_progress=on_progress)
    check_trainable(manifest, dataset["_id"], dataset["source_uri"])
    model_settings = settings.model
    batch = model_settings.batch_size
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="train-", dir=_ensure(settings.storage.local_root / "runs")))
    rows = {split: manifest[manifest["split"] == split] for split in ("train", "val", "test")}
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
        serving = outcome.model
        val = split_outputs(serving, rows["val"], batch, (LOGIT, EMBEDDING))
        calibration = fit_calibration(val[LOGIT], rows["val"]["label"].to_numpy())
        aggregation, aggregation_aucs, calibration = _media_level(calibration, rows["val"], val[LOGIT], model_settings)
        tracking.log_metrics({f"val_media_auc_{name}": auc for name, auc in aggregation_aucs.items()})
        distribution, accepted = describe_training_data(
            serving, rows, val[EMBEDDING], model_settings, settings.prepare.seed
        )
        tracking.log_metrics({"val_media_ood_accepted": accepted})
        test = split_outputs(serving, rows["test"], batch, (LOGIT, EMBEDDING))
        test_probs = calibration.probability(test[LOGIT])
        metrics = binary_metrics(rows["test"]["label"].to_numpy(), test_probs, calibration.threshold)
        tracking.log_metrics(metrics, prefix="test_")
        trust = _media_verdicts(rows["test"], test_probs, test[EMBEDDING], aggregation, calibration, distribution)
        tracking.log_metrics(trust, prefix="test_media_")
        tracking.log_metrics({"ood_threshold": distribution.threshold, "temperature": calibration.temperature,
                              "threshold": calibration.threshold, "real_below": calibration.real_below,
                              "fake_from": calibration.fake_from}, prefix="calibration_")  # fmt: skip
        tracking.log_dict(calibration.to_dict(), "calibration.json")
        save_plots(rows["test"]["label"].to_numpy(), test_probs, calibration.threshold,
                   rows["test"]["frame_path"].tolist(), workdir / "plots")  # fmt: skip
        tracking.log_artifacts(workdir / "plots", "plots")
        reference = drift_reference(rows, test_probs, aggregation, settings)
        check_frames = next(iter(frame_dataset(rows["test"].head(16), batch_size=16, training=False, seed=0)))[0]
        bundle_dir = save_bundle(
            workdir / "bundle",
            serving,
            calibration,
            _bundle_metadata(settings, dataset, aggregation),
            check_frames=np.asarray(check_frames),
            distribution=distribution,
            drift_reference=reference,
        )
        ref = tracking.register_bundle(settings, serving, bundle_dir)
        promoted, rule = _promote_if_better(settings, ref, metrics, manifest)
        tracking.log_dict({"rule": rule, "promoted": promoted}, "promotion.json")
        tracking.log_dict(outcome.accelerator, "accelerator.json")
        card = model_card(ref, dataset, manifest, metrics, trust, calibration, distribution, aggregation, settings)
        tracking.log_card(card, render_card(card))
        document = {
            "_id": run_id,
            "model": {"name": ref.name, "version": ref.version},
            "dataset_id": dataset["_id"],
            "manifest_hash": dataset["manifest_hash"],
            "config_hash": settings.config_hash(),
            "backbone": model_settings.backbone,
            "image_size": model_settings.image_size,
            "metrics": metrics,
            "trust": trust,
            "calibration": calibration.to_dict(),
            "ood": distribution.describe(),
            "aggregation": aggregation,
            "unfrozen_blocks": outcome.unfrozen_blocks,
            "history": outcome.history,
            "weight_mean": outcome.weight_mean,
            "accelerator": outcome.accelerator,
            "seconds": {**outcome.seconds, "total": time.perf_counter() - started},
            "promoted": promoted,
            "promotion_rule": rule,
            "tracking_uri": redact(tracking.configure(settings)),  # stored and printed: never its password
            "card": card,
        }
        store.record_training_run(document)
    return document


def _by_media(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Content id -> positions (within ``rows``) of that media item's frames."""
    return rows.reset_index(drop=True).groupby("content_id").indices


def _media_level(
    calibration: Calibration, val_rows: pd.DataFrame, val_logits: np.ndarray, model_settings: ModelSettings
):
    """Choose the aggregation rule and the verdict band edges on whole validation media."""
    probs = calibration.probability(val_logits)
    items = list(_by_media(val_rows).values())
    labels = val_rows["label"].to_numpy()[[item[0] for item in items]]
    frame_scores = [probs[item] for item in items]
    rule, aucs = choose_rule(frame_scores, labels)
    media_scores = np.array([aggregate(scores, rule) for scores in frame_scores])
    banded = with_band_edges(calibration, media_scores, labels, max_fpr_real=model_settings.max_fpr_real,
                             max_fnr_fake=model_settings.max_fnr_fake)  # fmt: skip
    return rule, aucs, banded


def media_stats(rows: pd.DataFrame) -> dict[str, MediaStats]:
    """Content id -> the input statistics of that media item in manifest rows (from its first frame's row)."""
    first = rows.drop_duplicates("content_id")

    def column(name: str, default):
        return first[name].tolist() if name in first else [default] * len(first)  # manifests before these columns

    return {
        content_id: MediaStats(kind, int(width), int(height), codec, float(fps), float(duration), float(bits))
        for content_id, kind, width, height, codec, fps, duration, bits in zip(
            first["content_id"],
            first["kind"],
            first["width"],
            first["height"],
            column("codec", "unknown"),
            column("fps", 0.0),
            column("duration_s", 0.0),
            column("bits_per_pixel", 0.0),
            strict=True,
        )  # fmt: skip
    }


def describe_training_data(
    predictor: ModelBundle | keras.Model,
    rows: dict[str, pd.DataFrame],
    val_embeddings: np.ndarray,
    model_settings: ModelSettings,
    seed: int,
) -> tuple[TrainingDistribution, float]:
    """Fit the out-of-distribution checks: embeddings of a class-stratified sample of training frames,
    the threshold on validation media, and the training media's input statistics.

    Returns the distribution and the share of validation media it accepts.
    """
    train = rows["train"].drop_duplicates("frame_path")  # oversampling repeats frames
    per_class = max(1, model_settings.ood_reference_frames // max(1, train["label"].nunique()))
    references = pd.concat(
        [group.sample(min(len(group), per_class), random_state=seed) for _, group in train.groupby("label")]
    )
    embeddings = split_outputs(predictor, references, model_settings.batch_size, (EMBEDDING,))[EMBEDDING]
    distribution, val_scores = fit_distribution(
        model_settings.ood_method,
        embeddings,
        references["label"].to_numpy(),
        [val_embeddings[item] for item in _by_media(rows["val"]).values()],
        list(media_stats(train).values()),
        accept=model_settings.ood_accept,
    )
    accepted = float(np.mean(val_scores <= distribution.threshold)) if len(val_scores) else float("nan")
    return distribution, accepted


def drift_reference(
    rows: dict[str, pd.DataFrame], test_probs: np.ndarray, rule: str, settings: Settings
) -> DriftReference:
    """What drift checks compare scored media with: the training media's input statistics (brightness where the
    manifest has it) and P(AI) of the test media, aggregated as scoring aggregates them."""
    train = rows["train"].drop_duplicates("content_id")
    brightness = dict(zip(train["content_id"], train["brightness"], strict=True)) if "brightness" in train else {}
    profiles = [
        MediaProfile.from_stats(stats, brightness=brightness.get(content_id))
        for content_id, stats in media_stats(train).items()
    ]
    test_media = [aggregate(test_probs[item], rule) for item in _by_media(rows["test"]).values()]
    return DriftReference.fit(profiles, test_media, limit=settings.drift.reference_media, seed=settings.prepare.seed)


def _media_verdicts(
    rows: pd.DataFrame,
    probs: np.ndarray,
    embeddings: np.ndarray,
    rule: str,
    calibration: Calibration,
    distribution: TrainingDistribution,
) -> dict[str, float]:
    """Coverage and accuracy of whole-media verdicts on a labelled split, with and without abstention."""
    items, stats = _by_media(rows), media_stats(rows)
    labels = rows["label"].to_numpy()[[item[0] for item in items.values()]]
    decisions = [
        decide(aggregate(probs[item], rule), calibration, distribution.assess(embeddings[item], stats[content_id]))
        for content_id, item in items.items()
    ]
    with_abstention = selective_metrics(labels, [d.verdict for d in decisions])
    without = selective_metrics(labels, [d.model_verdict for d in decisions])
    outside = float(np.mean([d.reason == OUTSIDE for d in decisions])) if decisions else float("nan")
    return {**with_abstention, "ood_rate": outside, **{f"{k}_without_abstention": v for k, v in without.items()
                                                       if k != "media"}}  # fmt: skip


def _promote_if_better(
    settings: Settings, ref: tracking.ModelRef, metrics: dict, manifest: pd.DataFrame
) -> tuple[bool, str]:
    """Move ``champion`` to the new version only if it has a test AUC and beats the champion on this same test set."""
    new_score = metrics.get(PROMOTION_METRIC, float("nan"))
    if np.isnan(new_score):
        labels = manifest.loc[manifest["split"] == "test"].drop_duplicates("content_id")["label"]
        return False, (
            f"v{ref.version} has no test {PROMOTION_METRIC}: its test split holds {int((labels == 0).sum())} real "
            f"and {int((labels == 1).sum())} fake media, and a model is never promoted without a test "
            f"{PROMOTION_METRIC}; the champion stays as it was"
        )
    current = tracking.champion(settings)
    if current is None:
        tracking.promote(ref, reason="first registered model")
        return True, "no champion yet: the first model becomes champion"
    champion = load_bundle(tracking.bundle_folder(settings, current))
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
