"""The one module that talks to MongoDB: collections, indexes and idempotent upserts.

Every document is keyed by a content sha256 (media, verdicts) or by a content-derived id
(datasets, runs), so re-running any stage on the same input adds nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError

MEDIA, DATASETS, QUARANTINE, TRAINING_RUNS, VERDICTS = "media", "datasets", "quarantine", "training_runs", "verdicts"
INTAKE, CLAIMS, DRIFT = "intake", "claims", "drift"
DUPLICATE_KEY = 11000
RETRIES, BACKOFF_S, SELECTION_TIMEOUT_S = 4, 1.0, 5.0
log = logging.getLogger(__name__)
_P, _R = ParamSpec("_P"), TypeVar("_R")


class StoreUnavailable(ConnectionError):
    """MongoDB did not answer after bounded retries; the message names the server (never credentials)."""


def _retrying(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Retry an idempotent store operation with exponential backoff while MongoDB is unreachable.

    Every write here is an upsert or an insert of new ids, so a retried call after a lost reply
    changes nothing twice.
    """

    @functools.wraps(method)
    def wrapper(self: ResultStore, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                return method(self, *args, **kwargs)
            except ConnectionFailure as error:
                if attempt == self.retries:
                    raise StoreUnavailable(
                        f"MongoDB at {self.server} did not answer after {attempt + 1} attempts over "
                        f"{time.monotonic() - started:.0f} s ({type(error).__name__}); nothing was half-written: "
                        "rerun once the server is back"
                    ) from None
                delay = self.backoff_s * 2**attempt
                log.warning("MongoDB at %s unreachable (%s); retry in %.1f s", self.server, type(error).__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


EVIDENCE_IMAGES = ("jpeg", "gradcam_jpeg")
_NO_IMAGES = {f"evidence.{image}": 0 for image in EVIDENCE_IMAGES}


class ResultStore:
    """Typed access to the pipeline's MongoDB database."""

    def __init__(
        self, client: MongoClient, *, database: str, retries: int = RETRIES, backoff_s: float = BACKOFF_S
    ) -> None:
        self.client = client
        self.db: Database = client[database]
        self.retries, self.backoff_s = retries, backoff_s

    @classmethod
    def from_uri(
        cls, uri: str, *, database: str, retries: int = RETRIES, timeout_s: float = SELECTION_TIMEOUT_S
    ) -> ResultStore:
        client = MongoClient(uri, serverSelectionTimeoutMS=int(timeout_s * 1000), tz_aware=True)
        return cls(client, database=database, retries=retries)

    @property
    def server(self) -> str:
        """Host and port of the server, for messages (the URI may hold a password)."""
        hosts = self.client.topology_description.server_descriptions()
        return ", ".join(f"{host}:{port}" for host, port in hosts) or "an unknown host"

    @_retrying
    def ensure_indexes(self) -> None:
        """Create the indexes the common queries need (idempotent).

        ``media`` has only its ``_id`` (the content sha256): no query filters it otherwise, and
        a secondary index doubles the cost of inserting a 100k-image dataset.
        """
        self.db[DATASETS].create_index([("created_at", DESCENDING)])
        self.db[QUARANTINE].create_index([("dataset_id", ASCENDING)])
        self.db[TRAINING_RUNS].create_index([("created_at", DESCENDING)])
        verdicts = self.db[VERDICTS]
        verdicts.create_index([("created_at", DESCENDING)])
        verdicts.create_index([("verdict", ASCENDING), ("created_at", DESCENDING)])
        verdicts.create_index([("model.version", ASCENDING), ("created_at", DESCENDING)])
        verdicts.create_index([("reason", ASCENDING), ("created_at", DESCENDING)])
        verdicts.create_index([("sources", ASCENDING)])
        verdicts.create_index([("model.version", ASCENDING), ("scored_at", DESCENDING)])
        self.db[DRIFT].create_index([("created_at", DESCENDING)])
        self.db[INTAKE].create_index([("status", ASCENDING), ("seen_at", DESCENDING)])

    # -- prepare -----------------------------------------------------------------------
    @_retrying
    def record_media(self, media: list[dict[str, Any]]) -> None:
        """Store source media documents, keyed by content id.

        They record facts about content where it was first seen, so they are inserted once and
        skipped when present: idempotent, and one round trip per batch. Which media belong to a
        dataset is its manifest's business.
        """
        now = _now()
        _insert_new(self.db[MEDIA], [
            {"_id": m["content_id"], **{k: v for k, v in m.items() if k != "content_id"}, "created_at": now}
            for m in media
        ])  # fmt: skip

    @_retrying
    def set_media_status(self, content_ids: list[str], status: str) -> None:
        """Mark recorded media whose fate was settled after processing (e.g. ``label_conflict``)."""
        if content_ids:
            self.db[MEDIA].update_many({"_id": {"$in": content_ids}}, {"$set": {"status": status}})

    @_retrying
    def record_dataset(self, document: dict[str, Any], quarantined: list[dict[str, Any]]) -> None:
        """Store a dataset version and the inputs it quarantined (after its media: see ``record_media``)."""
        dataset_id, now = document["_id"], _now()
        _insert_new(self.db[QUARANTINE], [
            {"_id": _key(dataset_id, q["uri"]), **q, "dataset_id": dataset_id, "created_at": now} for q in quarantined
        ])  # fmt: skip
        self.db[DATASETS].update_one(
            {"_id": dataset_id}, {"$set": document, "$setOnInsert": {"created_at": now}}, upsert=True
        )

    @_retrying
    def latest_dataset(self) -> dict[str, Any] | None:
        return self.db[DATASETS].find_one(sort=[("created_at", DESCENDING)])

    @_retrying
    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        return self.db[DATASETS].find_one({"_id": dataset_id})

    # -- train -------------------------------------------------------------------------
    @_retrying
    def record_training_run(self, document: dict[str, Any]) -> None:
        self.db[TRAINING_RUNS].update_one(
            {"_id": document["_id"]}, {"$set": document, "$setOnInsert": {"created_at": _now()}}, upsert=True
        )

    @_retrying
    def training_run(self, run_id: str) -> dict[str, Any] | None:
        """A training run's document (its model card included) by MLflow run id."""
        return self.db[TRAINING_RUNS].find_one({"_id": run_id}, {"history": 0})

    @_retrying
    def training_run_of(self, *, name: str, version: str) -> dict[str, Any] | None:
        """The training run that registered a model version."""
        return self.db[TRAINING_RUNS].find_one({"model.name": name, "model.version": version}, {"history": 0})

    # -- score -------------------------------------------------------------------------
    @_retrying
    def find_verdict(self, content_id: str) -> dict[str, Any] | None:
        return self.db[VERDICTS].find_one({"_id": content_id})

    @_retrying
    def find_verdict_by_prefix(self, prefix: str) -> dict[str, Any] | None:
        """A verdict by full sha256 or by an unambiguous prefix of it (evidence images left out)."""
        query = {"_id": {"$gte": prefix, "$lt": prefix + "\uffff"}}
        matches = list(self.db[VERDICTS].find(query, _NO_IMAGES).limit(2))
        return matches[0] if len(matches) == 1 else None

    @_retrying
    def intake_record(self, uri: str) -> dict[str, Any] | None:
        """What was last seen at a bucket location: size, mtime, content id, and status with its reason."""
        return self.db[INTAKE].find_one({"_id": uri})

    @_retrying
    def record_intake(self, uri: str, *, status: str, reason: str | None = None, **facts: Any) -> None:
        """Record the fate of one bucket location (``scored``, ``failed``, ``linked`` or ``skipped``)."""
        self.db[INTAKE].update_one(
            {"_id": uri}, {"$set": {"status": status, "reason": reason, **facts, "seen_at": _now()}}, upsert=True
        )

    @_retrying
    def skipped_objects(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Bucket locations that were not scored, with why, most recent first."""
        return list(self.db[INTAKE].find({"status": "skipped"}).sort("seen_at", DESCENDING).limit(limit))

    @_retrying
    def claim(self, content_id: str, *, owner: str, ttl_s: float) -> str | None:
        """Claim the scoring of one content for ``ttl_s``; None when claimed, else the current holder.

        Atomic through the unique ``_id``: the upsert matches only an expired claim, so a live
        one makes it insert a duplicate key and fail, whatever the timing of two claimers.
        """
        for _ in range(3):  # a holder that releases between our insert and our read: try again
            now = _now()
            try:
                self.db[CLAIMS].update_one(
                    {"_id": content_id, "expires_at": {"$lt": now}},
                    {"$set": {"owner": owner, "claimed_at": now, "expires_at": now + timedelta(seconds=ttl_s)}},
                    upsert=True,
                )
                return None
            except DuplicateKeyError:
                holder = self.db[CLAIMS].find_one({"_id": content_id}, {"owner": 1})
            if holder is not None:  # our own claim: a retried call whose first reply was lost
                return None if holder["owner"] == owner else holder["owner"]
        return "another scorer"

    @_retrying
    def take_over_claim(self, content_id: str, *, holder: str, owner: str, ttl_s: float) -> bool:
        """Take a claim whose holder is known to be dead; False when someone else changed it first."""
        now = _now()
        result = self.db[CLAIMS].update_one(
            {"_id": content_id, "owner": holder},
            {"$set": {"owner": owner, "claimed_at": now, "expires_at": now + timedelta(seconds=ttl_s)}},
        )
        return result.modified_count == 1

    @_retrying
    def claim_holders(self) -> dict[str, str]:
        """Every live or stale claim: content id -> holder."""
        return {c["_id"]: c["owner"] for c in self.db[CLAIMS].find({}, {"owner": 1})}

    @_retrying
    def release_claim(self, content_id: str, *, owner: str) -> None:
        self.db[CLAIMS].delete_one({"_id": content_id, "owner": owner})

    @_retrying
    def link_source(self, content_id: str, uri: str) -> None:
        """Attach another location (a re-drop or rename) to an existing verdict."""
        self.db[VERDICTS].update_one({"_id": content_id}, {"$addToSet": {"sources": uri}})

    @_retrying
    def record_verdict(self, document: dict[str, Any]) -> None:
        """Upsert a verdict keyed by content sha256; its source URI joins ``sources``."""
        body = {k: v for k, v in document.items() if k not in ("_id", "source_uri")}
        self.db[VERDICTS].update_one(
            {"_id": document["_id"]},
            {
                "$set": {**body, "source_uri": document["source_uri"]},
                "$addToSet": {"sources": document["source_uri"]},
                "$setOnInsert": {"created_at": _now()},
            },
            upsert=True,
        )

    @_retrying
    def list_verdicts(
        self,
        *,
        limit: int = 20,
        verdict: str | None = None,
        model_version: str | None = None,
        reason: str | None = None,
    ) -> list[dict[str, Any]]:
        """Most recent verdicts first, without per-frame detail or evidence images.

        ``reason`` keeps only verdicts given for that reason (e.g. outside the training distribution).
        """
        query: dict[str, Any] = {}
        if verdict:
            query["verdict"] = verdict
        if model_version:
            query["model.version"] = model_version
        if reason:
            query["reason"] = reason
        cursor = self.db[VERDICTS].find(query, {"frames": 0, **_NO_IMAGES})
        return list(cursor.sort("created_at", DESCENDING).limit(limit))

    @_retrying
    def verdicts_by_id(self, content_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The verdicts of these contents (those that have one), in one query, without frames or evidence images."""
        cursor = self.db[VERDICTS].find({"_id": {"$in": content_ids}}, {"frames": 0, **_NO_IMAGES})
        return {document["_id"]: document for document in cursor}

    # -- drift -------------------------------------------------------------------------
    @_retrying
    def recent_scored(self, *, model_name: str, model_version: str, limit: int) -> list[dict[str, Any]]:
        """The media a model version scored most recently, newest first: input statistics, P(AI), when."""
        query = {"model.name": model_name, "model.version": model_version, "status": "scored"}
        cursor = self.db[VERDICTS].find(query, {"input": 1, "probability": 1, "scored_at": 1})
        return list(cursor.sort("scored_at", DESCENDING).limit(limit))

    @_retrying
    def record_drift(self, document: dict[str, Any]) -> bool:
        """Store a drift check keyed by its model and the media in its window; False when already stored."""
        model, window = document["model"], document["window"]
        result = self.db[DRIFT].update_one(
            {"_id": _key(model["name"], model["version"], *sorted(window["content_ids"]))},
            {"$setOnInsert": {**document, "created_at": _now()}},
            upsert=True,
        )
        return result.upserted_id is not None

    @_retrying
    def drift_checks(
        self, *, limit: int = 20, model_version: str | None = None, content_ids: bool = False
    ) -> list[dict[str, Any]]:
        """Stored drift checks, most recent first; the content ids of their windows only when asked."""
        query = {"model.version": model_version} if model_version else {}
        projection = None if content_ids else {"window.content_ids": 0}
        return list(self.db[DRIFT].find(query, projection).sort("created_at", DESCENDING).limit(limit))

    @_retrying
    def count_drift_checks(self, *, model_name: str, model_version: str) -> int:
        return self.db[DRIFT].count_documents({"model.name": model_name, "model.version": model_version})

    @_retrying
    def model_versions(self) -> list[str]:
        """Model versions that have verdicts, newest first."""
        return sorted(self.db[VERDICTS].distinct("model.version"), key=_version_key, reverse=True)

    @_retrying
    def evidence_jpeg(self, content_id: str, index: int, *, image: str = "jpeg") -> bytes | None:
        """A stored JPEG of frame ``index`` among a verdict's evidence frames, if kept: the frame
        itself (``jpeg``) or its Grad-CAM overlay (``gradcam_jpeg``)."""
        document = self.db[VERDICTS].find_one({"_id": content_id}, {"evidence": 1}) or {}
        return next((e.get(image) for e in document.get("evidence", []) if e["index"] == index), None)

    @_retrying
    def count(self, collection: str) -> int:
        return self.db[collection].count_documents({})

    # -- notebooks ---------------------------------------------------------------------
    @_retrying
    def quarantined(self, dataset_id: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
        """Inputs a dataset version refused (``uri``, ``content_id``, ``reason``), in ``uri`` order."""
        cursor = self.db[QUARANTINE].find({"dataset_id": dataset_id}, {"uri": 1, "content_id": 1, "reason": 1})
        return list(cursor.sort("uri", ASCENDING).limit(limit))


def _insert_new(collection: Collection, documents: list[dict[str, Any]]) -> None:
    """Insert documents whose ``_id`` is not there yet; existing ones are left as they are."""
    if not documents:
        return
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as error:
        if any(e["code"] != DUPLICATE_KEY for e in error.details["writeErrors"]):
            raise


def _version_key(version: Any) -> tuple[int, str]:
    return (int(version), "") if str(version).isdigit() else (-1, str(version))


def _now() -> datetime:
    return datetime.now(UTC)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
