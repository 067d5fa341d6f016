"""The score stage: watched bucket -> frames -> calibrated scores -> per-media verdicts in MongoDB.

Each verdict also weighs whether the media is like the model's training data (out of it, the
verdict abstains), the provenance the file carries, and keeps Grad-CAM overlays of the frames
behind a ``fake`` or ``uncertain`` verdict (see ``pipeline.verdicts``).

Identity is the content sha256: a file already scored (re-dropped, renamed, copied) gets
no second verdict; its new location is linked to the existing one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import fsspec
import numpy as np

from pipeline import tracking
from pipeline.aggregate import aggregate
from pipeline.media.faces import frame_region
from pipeline.media.images import MediaError, as_stored, decode_image, encode_jpeg, resize_to_square
from pipeline.media.provenance import read_provenance
from pipeline.media.sniff import SNIFF_BYTES, sniff_format, sniff_kind
from pipeline.media.stats import image_stats, video_stats
from pipeline.media.video import extract_frames_from
from pipeline.model.bundle import ModelBundle, load_bundle
from pipeline.model.explain import grad_cam, overlay
from pipeline.model.onnx_export import CAM, EMBEDDING, LOGIT
from pipeline.settings import Settings
from pipeline.store import ResultStore
from pipeline.verdicts import decide


class NoModelError(LookupError):
    """Scoring was asked for but no champion model is registered."""


@dataclass
class LoadedModel:
    bundle: ModelBundle
    ref: tracking.ModelRef


PROCESSED, FAILED = ".processed", ".failed"  # hidden: never listed as incoming
EVIDENCE_FRAMES, EVIDENCE_SIZE = 3, 160  # the highest-scoring frames, kept as small JPEGs for review
EXPLAINED = ("fake", "uncertain")  # verdicts whose evidence frames also get Grad-CAM overlays


def list_incoming(settings: Settings) -> list[tuple[str, int]]:
    """Every object in the watched bucket as (URI, size); hidden files and folders are skipped."""
    fs, root = fsspec.core.url_to_fs(settings.storage.incoming_uri)
    root = root.rstrip("/")
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
        return []
    found = fs.find(root, detail=True)
    return [
        (fs.unstrip_protocol(path), int(info.get("size") or 0))
        for path, info in sorted(found.items())
        if not any(part.startswith(".") for part in path[len(root) :].split("/"))
    ]


def unscored(settings: Settings, store: ResultStore) -> list[str]:
    """Objects in the watched bucket with no verdict yet.

    An object already recorded at the same location with the same size is skipped without
    reading it; anything else is hashed, and known content only gets its location linked.
    """
    store.ensure_indexes()
    new = []
    for uri, size in list_incoming(settings):
        if store.known_source_size(uri) == size:
            continue
        with fsspec.open(uri, "rb") as handle:
            content_id = hashlib.sha256(handle.read()).hexdigest()
        existing = store.find_verdict(content_id)
        if existing is None:
            new.append(uri)
            continue
        store.link_source(content_id, uri)
        if settings.score.after_scoring == "move":
            folder = PROCESSED if existing["status"] == "scored" else FAILED
            store.link_source(content_id, _move_aside(uri, folder, content_id))
    return new


def load_champion(settings: Settings) -> LoadedModel:
    ref = tracking.champion(settings)
    if ref is None:
        raise NoModelError(
            f"no '{tracking.CHAMPION}' version of {settings.mlflow.registered_model}: train a model first"
        )
    return LoadedModel(load_bundle(tracking.download_bundle(ref)), ref)


def score_uri(uri: str, loaded: LoadedModel, settings: Settings, store: ResultStore) -> dict:
    """Score one object and store its verdict; returns a short summary."""
    started = time.perf_counter()
    with fsspec.open(uri, "rb") as handle:
        data = handle.read()
    content_id = hashlib.sha256(data).hexdigest()
    if store.find_verdict(content_id) is not None:
        store.link_source(content_id, uri)
        return {"uri": uri, "content_id": content_id, "status": "already_scored"}
    timings = {"read": time.perf_counter() - started}
    document = {
        "_id": content_id,
        "content_id": content_id,
        "source_uri": uri,
        "kind": sniff_kind(data[:SNIFF_BYTES]),
        "size_bytes": len(data),
        "config_hash": settings.config_hash(),
        "model": {
            "name": loaded.ref.name,
            "version": loaded.ref.version,
            "run_id": loaded.ref.run_id,
            "dataset_id": loaded.bundle.metadata.get("dataset_id"),
            "runtime": loaded.bundle.runtime,
        },
    }
    try:
        document |= score_content(uri, data, document["kind"], loaded.bundle, settings, timings)[0]
        document["status"] = "scored"
    except MediaError as error:
        document |= {"status": "failed", "verdict": None, "reason": str(error)}
    document["timings_s"] = {**timings, "total": time.perf_counter() - started}
    document["scored_at"] = datetime.now(UTC)
    store.record_verdict(document)
    if settings.score.after_scoring == "move":
        folder = PROCESSED if document["status"] == "scored" else FAILED
        store.link_source(content_id, _move_aside(uri, folder, content_id))
    return {
        "uri": uri,
        "content_id": content_id,
        "kind": document["kind"],
        "status": document["status"],
        "verdict": document.get("verdict"),
        "basis": document.get("basis"),
        "probability": document.get("probability"),
        "ood_score": document.get("ood_score"),
        "reason": document.get("reason"),
    }


def _move_aside(uri: str, folder: str, content_id: str) -> str:
    """Move a scored object into a hidden folder of the bucket, never over another; return its new URI."""
    fs, path = fsspec.core.url_to_fs(uri)
    root, _, name = fs.unstrip_protocol(path).rpartition("/")
    target = f"{root}/{folder}/{name}"
    if fs.exists(fs._strip_protocol(target)):  # an earlier object of the same name: keep both
        target = f"{root}/{folder}/{content_id[:12]}-{name}"
    fs.makedirs(fs._strip_protocol(f"{root}/{folder}"), exist_ok=True)
    fs.mv(path, fs._strip_protocol(target))
    return target


def model_frame(rgb: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """Turn a decoded image or video frame into the model's input exactly as prepare stored training frames.

    Same region, resize policy and size, and the same JPEG loss.
    """
    meta = bundle.metadata
    square = resize_to_square(frame_region(rgb, meta.get("crop", "full")), bundle.frame_size, meta["resize_policy"])
    return as_stored(square)


def score_content(
    uri: str, data: bytes, kind: str, bundle: ModelBundle, settings: Settings, timings: dict[str, float]
) -> tuple[dict, dict[str, np.ndarray]]:
    """The verdict fields for one media item's bytes (nothing is stored) and the model's per-frame outputs.

    Raises ``MediaError`` for content that cannot be scored.
    """
    started = time.perf_counter()
    if kind == "image":
        rgb, _ = decode_image(data)
        stats = image_stats(sniff_format(data[:SNIFF_BYTES]), rgb.shape[1], rgb.shape[0], len(data))
        frames, times = [model_frame(rgb, bundle)], [0.0]
    elif kind == "video":
        info, extracted = extract_frames_from(
            uri, data, count=bundle.metadata["frames_per_video"], timeout_s=settings.prepare.ffmpeg_timeout_s
        )
        stats = video_stats(info)
        frames = [model_frame(f.rgb, bundle) for f in extracted]
        times = [f.time_s for f in extracted]
    else:
        raise MediaError("not an image or video (unrecognised content)")
    timings["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    outputs = bundle.infer(np.stack(frames), batch_size=settings.score.batch_size)
    probs = bundle.calibration.probability(outputs[LOGIT])
    timings["infer"] = time.perf_counter() - started
    started = time.perf_counter()
    rule = (
        bundle.metadata.get("aggregation", "mean")
        if settings.score.aggregation == "auto"
        else settings.score.aggregation
    )
    probability = aggregate(probs, rule)
    ood = bundle.distribution.assess(outputs.get(EMBEDDING), stats) if bundle.distribution else None
    provenance = read_provenance(data)
    decision = decide(probability, bundle.calibration, ood, provenance)
    timings["assess"] = time.perf_counter() - started
    strongest = np.argsort(-probs, kind="stable")[:EVIDENCE_FRAMES]
    explained = decision.verdict in EXPLAINED and CAM in outputs
    heatmaps = grad_cam(outputs[CAM][strongest], bundle.logit_bias) if explained else [None] * len(strongest)
    frame_ood = ood.frame_scores if ood and ood.frame_scores else [None] * len(frames)
    calibration = bundle.calibration
    document = {
        **decision.to_dict(),
        "probability": probability,
        "aggregation": rule,
        "duration_s": stats.duration_s,
        "frame_count": len(frames),
        "bands": {
            "real_below": calibration.real_below,
            "fake_from": calibration.fake_from,
            "note": calibration.band_note or None,
        },
        "explained": explained,  # the evidence frames carry Grad-CAM overlays
        "ood_score": ood.score if ood else None,
        "ood": ood.to_dict() if ood else None,
        "input": stats.to_dict(),
        "provenance": provenance.to_dict(),
        "frames": [
            {"index": i, "time_s": t, "probability": float(p), "ood_score": o}
            for i, (t, p, o) in enumerate(zip(times, probs, frame_ood, strict=True))
        ],
        "evidence": [
            {
                "index": int(i),
                "time_s": times[i],
                "probability": float(probs[i]),
                "jpeg": encode_jpeg(resize_to_square(frames[i], EVIDENCE_SIZE, "squash")),
                **({"gradcam_jpeg": encode_jpeg(overlay(frames[i], heat, size=EVIDENCE_SIZE))} if explained else {}),
            }
            for i, heat in zip(strongest, heatmaps, strict=True)
        ],
    }
    return document, outputs


def run(settings: Settings, store: ResultStore) -> list[dict]:
    """Score everything new in the watched bucket (the CLI's path)."""
    uris = unscored(settings, store)
    if not uris:
        return []
    loaded = load_champion(settings)
    return [score_uri(uri, loaded, settings, store) for uri in uris]
