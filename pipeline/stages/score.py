"""The score stage: watched bucket -> frames -> calibrated scores -> per-media verdicts in MongoDB.

Each verdict also weighs whether the media is like the model's training data (out of it, the
verdict abstains), the provenance the file carries, and keeps Grad-CAM overlays of the frames
behind a ``fake`` or ``uncertain`` verdict (see ``pipeline.verdicts``).

Identity is the content sha256: a file already scored (re-dropped, renamed, copied) gets
no second verdict; its new location is linked to the existing one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import fsspec
import numpy as np

from pipeline import bucket, tracking
from pipeline.aggregate import aggregate
from pipeline.intake import remove_abandoned_uploads
from pipeline.media.faces import frame_region
from pipeline.media.images import MediaError, as_stored, decode_image, encode_jpeg, resize_to_square
from pipeline.media.provenance import read_provenance
from pipeline.media.sniff import SNIFF_BYTES, sniff_format, sniff_path_kind
from pipeline.media.stats import brightness, image_stats, video_stats
from pipeline.media.video import DecodeLimits, extract_frames
from pipeline.model.bundle import ModelBundle, load_bundle
from pipeline.model.explain import grad_cam, overlay
from pipeline.model.onnx_export import CAM, EMBEDDING, LOGIT
from pipeline.settings import Settings
from pipeline.store import ResultStore, StoreUnavailable
from pipeline.verdicts import decide


class NoModelError(LookupError):
    """Scoring was asked for but no champion model is registered."""


class ChunkFailed(RuntimeError):
    """Some objects of a chunk failed unexpectedly; the others were scored."""


@dataclass
class LoadedModel:
    bundle: ModelBundle
    ref: tracking.ModelRef


PROCESSED, FAILED = ".processed", ".failed"  # hidden: never listed as incoming
EVIDENCE_FRAMES, EVIDENCE_SIZE = 3, 160  # the highest-scoring frames, kept as small JPEGs for review
EXPLAINED = ("fake", "uncertain")  # verdicts whose evidence frames also get Grad-CAM overlays
log = logging.getLogger(__name__)


@dataclass
class Survey:
    """One look at the watched bucket: what to score now, and what was left and why."""

    new: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # still being written: a later run takes them
    skipped: list[bucket.Skipped] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)
    linked: list[dict] = field(default_factory=list)  # known content at a new location: no new verdict

    def not_scored(self) -> list[dict]:
        """Summaries of what this look found but did not score: linked and skipped objects."""
        return self.linked + [{"uri": s.uri, "status": "skipped", "reason": s.reason} for s in self.skipped]


def survey(
    settings: Settings, store: ResultStore, *, source: str | None = None, settle_s: float | None = None
) -> Survey:
    """What in the watched bucket (or ``source``, a folder URI) needs a verdict.

    No entry stops the rest: what cannot be media is recorded as skipped with its reason.
    Objects modified in the last ``settle_s`` (default ``score.settle_s``) are waited for once,
    then left for a later run if they are still changing. An object recorded at the same location with
    the same size and modification time is not read again; anything else is hashed, and
    content already scored only gets its new location linked.
    """
    store.ensure_indexes()
    for content_id, holder in store.claim_holders().items():
        if _is_dead_here(holder):  # a scorer killed mid-object: its work is open again
            store.release_claim(content_id, owner=holder)
    if source is None:
        for path in remove_abandoned_uploads(settings.storage.incoming_uri, now=time.time()):
            log.info("removed a partial upload abandoned by a killed process: %s", path)
    listing = bucket.list_bucket(source or settings.storage.incoming_uri)
    found = Survey(skipped=listing.skipped, sidecars=listing.sidecars)
    for entry in listing.skipped:
        log.info("not scored: %s: %s", entry.uri, entry.reason)
        store.record_intake(entry.uri, status="skipped", reason=entry.reason)
    if listing.sidecars:
        log.info("not media, no verdict: %d sidecar file(s) such as %s", len(listing.sidecars), listing.sidecars[0])
    settle_s = settings.score.settle_s if settle_s is None else settle_s
    ready, young = bucket.settled(listing.objects, settle_s=settle_s, now=time.time())
    if young:
        now_ready, found.waiting = _settle(young, settle_s)
        ready += now_ready
    for obj in ready:
        try:
            state, content_id = _look_at(obj, settings, store)
            if state == "new":
                found.new.append(obj.uri)
            elif state == "linked":
                found.linked.append({"uri": obj.uri, "content_id": content_id, "status": "already_scored"})
        except bucket.StillWriting:
            found.waiting.append(obj.uri)
        except bucket.ObjectError as error:
            log.info("not scored: %s: %s", obj.uri, error)
            store.record_intake(obj.uri, status="skipped", reason=str(error))
            found.skipped.append(bucket.Skipped(obj.uri, str(error)))
    return found


def _settle(young: list[bucket.BucketObject], settle_s: float) -> tuple[list[bucket.BucketObject], list[str]]:
    """Wait until the youngest object would have settled; those unchanged since are ready, the rest wait."""
    time.sleep(max(0.0, min(settle_s, max(o.mtime for o in young) + settle_s - time.time())))
    unchanged = [bucket.stat_object(o.uri) == o for o in young]
    return (
        [o for o, same in zip(young, unchanged, strict=True) if same],
        [o.uri for o, same in zip(young, unchanged, strict=True) if not same],
    )


def unscored(settings: Settings, store: ResultStore) -> list[str]:
    """URIs in the watched bucket with no verdict yet (see :func:`survey`)."""
    return survey(settings, store).new


def _look_at(obj: bucket.BucketObject, settings: Settings, store: ResultStore) -> tuple[str, str | None]:
    """``("new", None)``, ``("known", id)`` when unchanged since last seen, or ``("linked", id)``
    when its content already has a verdict (a re-drop or rename: the location is linked)."""
    seen = store.intake_record(obj.uri)
    if seen and seen.get("content_id") and (seen.get("size"), seen.get("mtime")) == (obj.size, obj.mtime):
        return "known", seen["content_id"]
    content_id = bucket.content_sha256(obj, spool_dir=_spool_dir(settings))
    existing = store.find_verdict(content_id)
    if existing is None:
        return "new", None
    _link(store, obj, content_id, existing["status"], settings)
    return "linked", content_id


def _link(store: ResultStore, obj: bucket.BucketObject, content_id: str, status: str, settings: Settings) -> None:
    """Attach a location holding known content to its verdict (moving it aside if configured)."""
    store.link_source(content_id, obj.uri)
    store.record_intake(obj.uri, status="linked", content_id=content_id, size=obj.size, mtime=obj.mtime)
    if settings.score.after_scoring == "move":
        store.link_source(content_id, _move_aside(obj.uri, PROCESSED if status == "scored" else FAILED, content_id))


@lru_cache(maxsize=2)
def _loaded_version(ref: tracking.ModelRef, folder: Path) -> LoadedModel:
    return LoadedModel(load_bundle(folder), ref)


def load_version(settings: Settings, ref: tracking.ModelRef) -> LoadedModel:
    """A registered version, loaded once per process; its bundle is downloaded once per version."""
    return _loaded_version(ref, tracking.bundle_folder(settings, ref))


def load_champion(settings: Settings) -> LoadedModel:
    """The champion (see :func:`load_version`)."""
    ref = tracking.champion(settings)
    if ref is None:
        raise NoModelError(
            f"no '{tracking.CHAMPION}' version of {settings.mlflow.registered_model}: train a model first"
        )
    return load_version(settings, ref)


def in_chunks(uris: list[str], size: int) -> list[list[str]]:
    """``uris`` in consecutive chunks of ``size`` (the last one shorter): one mapped task each."""
    return [uris[start : start + size] for start in range(0, len(uris), size)]


def score_chunk(uris: list[str], settings: Settings, store: ResultStore) -> list[dict]:
    """Score several objects with one champion load; an unexpected error fails only its own object.

    MongoDB out of reach stops the chunk: every object would fail the same way. Any other error
    is logged and the rest is scored; ``ChunkFailed`` then names the objects that failed, so that
    the task's retry, finding the others already scored, tries only them again.
    """
    loaded = load_champion(settings)
    results, failed = [], []
    for uri in uris:
        try:
            results.append(score_uri(uri, loaded, settings, store))
        except StoreUnavailable:
            raise
        except Exception as error:
            log.exception("scoring %s failed", uri)
            failed.append(f"{uri} ({type(error).__name__}: {error})")
    if failed:
        raise ChunkFailed(f"{len(failed)} of {len(uris)} objects failed, the rest were scored: {'; '.join(failed)}")
    return results


def score_uri(
    uri: str, loaded: LoadedModel, settings: Settings, store: ResultStore, *, settle_s: float | None = None
) -> dict:
    """Score one object and store its verdict; returns a short summary.

    Whatever the object turns out to be, this returns: a vanished, unreadable or non-regular
    object is recorded as ``skipped`` with its reason, one still being written is left
    (``waiting``) without a trace, and content another scorer has claimed is left to it.
    """
    obj = bucket.stat_object(uri)
    if obj is None:
        return _skip(store, uri, "vanished before it was read")
    settle_s = settings.score.settle_s if settle_s is None else settle_s
    if time.time() - obj.mtime < settle_s:
        return {"uri": uri, "status": "waiting", "reason": "still being written"}
    try:
        with bucket.materialised(
            obj, max_bytes=settings.score.max_object_mb * 1024 * 1024, spool_dir=_spool_dir(settings)
        ) as item:
            summary = _score_claimed(obj, item, loaded, settings, store)
    except bucket.StillWriting:
        return {"uri": uri, "status": "waiting", "reason": "still being written"}
    except bucket.ObjectError as error:
        return _skip(store, uri, str(error))
    if settings.score.after_scoring == "move" and summary["status"] in ("scored", "failed"):
        folder = PROCESSED if summary["status"] == "scored" else FAILED
        store.link_source(summary["content_id"], _move_aside(uri, folder, summary["content_id"]))
    return summary


def _skip(store: ResultStore, uri: str, reason: str) -> dict:
    store.record_intake(uri, status="skipped", reason=reason)
    return {"uri": uri, "status": "skipped", "reason": reason}


def _score_claimed(
    obj: bucket.BucketObject, item: bucket.Materialised, loaded: LoadedModel, settings: Settings, store: ResultStore
) -> dict:
    """Score content under a claim in MongoDB, so that two scorers never do the same work."""
    content_id = item.content_id
    existing = store.find_verdict(content_id)
    if existing is not None:
        _link_in_place(store, obj, content_id)
        return {"uri": obj.uri, "content_id": content_id, "status": "already_scored"}
    owner = _claimer()
    holder = store.claim(content_id, owner=owner, ttl_s=settings.score.claim_ttl_s)
    if holder is not None and not (
        _is_dead_here(holder)
        and store.take_over_claim(content_id, holder=holder, owner=owner, ttl_s=settings.score.claim_ttl_s)
    ):
        return {"uri": obj.uri, "content_id": content_id, "status": "claimed", "reason": f"being scored by {holder}"}
    try:
        if store.find_verdict(content_id) is not None:  # finished by the previous holder meanwhile
            _link_in_place(store, obj, content_id)
            summary = {"uri": obj.uri, "content_id": content_id, "status": "already_scored"}
        else:
            summary = _score_new(obj, item, loaded, settings, store)
    except StoreUnavailable:
        raise  # the claim expires, or is taken over once this process is gone
    except BaseException:
        store.release_claim(content_id, owner=owner)
        raise
    store.release_claim(content_id, owner=owner)
    return summary


def _link_in_place(store: ResultStore, obj: bucket.BucketObject, content_id: str) -> None:
    store.link_source(content_id, obj.uri)
    store.record_intake(obj.uri, status="linked", content_id=content_id, size=obj.size, mtime=obj.mtime)


def _score_new(
    obj: bucket.BucketObject, item: bucket.Materialised, loaded: LoadedModel, settings: Settings, store: ResultStore
) -> dict:
    started = time.perf_counter()
    timings = {"read": 0.0}
    document = {
        "_id": item.content_id,
        "content_id": item.content_id,
        "source_uri": obj.uri,
        "kind": _sniffed_kind(item.path, settings),
        "size_bytes": item.size,
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
        if item.path is None:
            raise MediaError(
                f"larger than score.max_object_mb ({settings.score.max_object_mb} MB): {item.size / 2**20:.0f} MB"
            )
        document |= score_content(item.path, document["kind"], loaded.bundle, settings, timings)[0]
        document["status"] = "scored"
    except MediaError as error:
        document |= {"status": "failed", "verdict": None, "reason": str(error)}
    document["timings_s"] = {**timings, "total": time.perf_counter() - started}
    document["scored_at"] = datetime.now(UTC)
    store.record_verdict(document)
    store.record_intake(
        obj.uri,
        status=document["status"],
        reason=document.get("reason"),
        content_id=item.content_id,
        size=obj.size,
        mtime=obj.mtime,
    )
    return {
        "uri": obj.uri,
        "content_id": item.content_id,
        "kind": document["kind"],
        "status": document["status"],
        "verdict": document.get("verdict"),
        "basis": document.get("basis"),
        "probability": document.get("probability"),
        "ood_score": document.get("ood_score"),
        "reason": document.get("reason"),
    }


def _sniffed_kind(path: Path | None, settings: Settings) -> str:
    """Image, video (any container FFmpeg decodes, animated images included) or unknown."""
    if path is None:
        return "unknown"
    try:
        return sniff_path_kind(path, timeout_s=settings.prepare.ffmpeg_timeout_s)
    except OSError:
        return "unknown"


def _spool_dir(settings: Settings) -> Path:
    return settings.storage.local_root / "spool"


def _claimer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_dead_here(holder: str) -> bool:
    """Whether a claim's holder is a process on this host that no longer runs (killed mid-object)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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
    path: Path, kind: str, bundle: ModelBundle, settings: Settings, timings: dict[str, float]
) -> tuple[dict, dict[str, np.ndarray]]:
    """The verdict fields for one local media file (nothing is stored) and the model's per-frame outputs.

    Images are decoded from memory (their size is bounded by the pixel limit); videos are read
    by FFmpeg from the file. Raises ``MediaError`` for content that cannot be scored.
    """
    started = time.perf_counter()
    if kind == "image":
        data = path.read_bytes()
        rgb, _ = decode_image(data)
        stats = image_stats(sniff_format(data[:SNIFF_BYTES]), rgb.shape[1], rgb.shape[0], len(data))
        luma = brightness([rgb])
        frames, times = [model_frame(rgb, bundle)], [0.0]
        provenance = read_provenance(data)
    elif kind == "video":
        info, extracted = extract_frames(
            str(path),
            count=bundle.metadata["frames_per_video"],
            timeout_s=settings.prepare.ffmpeg_timeout_s,
            limits=DecodeLimits.from_settings(settings.prepare),
        )
        stats = video_stats(info)
        luma = brightness([f.rgb for f in extracted])
        provenance = read_provenance(path)
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
        "input": {**stats.to_dict(), "brightness": luma},
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
    """Score everything new in the watched bucket; skipped objects are listed with their reasons."""
    found = survey(settings, store)
    others = found.not_scored()
    if not found.new:
        return others
    loaded = load_champion(settings)
    return [score_uri(uri, loaded, settings, store) for uri in found.new] + others
