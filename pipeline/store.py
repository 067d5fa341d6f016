"""The one module that talks to MongoDB: collections, indexes and idempotent upserts.

Every document is keyed by a content sha256 (media, verdicts) or by a content-derived id
(datasets, runs), so re-running any stage on the same input adds nothing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

MEDIA, DATASETS, QUARANTINE, TRAINING_RUNS, VERDICTS = "media", "datasets", "quarantine", "training_runs", "verdicts"
DUPLICATE_KEY = 11000
EVIDENCE_IMAGES = ("jpeg", "gradcam_jpeg")
_NO_IMAGES = {f"evidence.{image}": 0 for image in EVIDENCE_IMAGES}


class ResultStore:
    """Typed access to the pipeline's MongoDB database."""

    def __init__(self, client: MongoClient, *, database: str) -> None:
        self.client = client
        self.db: Database = client[database]

    @classmethod
    def from_uri(cls, uri: str, *, database: str) -> ResultStore:
        return cls(MongoClient(uri, serverSelectionTimeoutMS=10_000, tz_aware=True), database=database)

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

    # -- prepare -----------------------------------------------------------------------
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

    def set_media_status(self, content_ids: list[str], status: str) -> None:
        """Mark recorded media whose fate was settled after processing (e.g. ``label_conflict``)."""
        if content_ids:
            self.db[MEDIA].update_many({"_id": {"$in": content_ids}}, {"$set": {"status": status}})

    def record_dataset(self, document: dict[str, Any], quarantined: list[dict[str, Any]]) -> None:
        """Store a dataset version and the inputs it quarantined (after its media: see ``record_media``)."""
        dataset_id, now = document["_id"], _now()
        _insert_new(self.db[QUARANTINE], [
            {"_id": _key(dataset_id, q["uri"]), **q, "dataset_id": dataset_id, "created_at": now} for q in quarantined
        ])  # fmt: skip
        self.db[DATASETS].update_one(
            {"_id": dataset_id}, {"$set": document, "$setOnInsert": {"created_at": now}}, upsert=True
        )

    def latest_dataset(self) -> dict[str, Any] | None:
        return self.db[DATASETS].find_one(sort=[("created_at", DESCENDING)])

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        return self.db[DATASETS].find_one({"_id": dataset_id})

    # -- train -------------------------------------------------------------------------
    def record_training_run(self, document: dict[str, Any]) -> None:
        self.db[TRAINING_RUNS].update_one(
            {"_id": document["_id"]}, {"$set": document, "$setOnInsert": {"created_at": _now()}}, upsert=True
        )

    def training_run(self, run_id: str) -> dict[str, Any] | None:
        """A training run's document (its model card included) by MLflow run id."""
        return self.db[TRAINING_RUNS].find_one({"_id": run_id}, {"history": 0})

    def training_run_of(self, *, name: str, version: str) -> dict[str, Any] | None:
        """The training run that registered a model version."""
        return self.db[TRAINING_RUNS].find_one({"model.name": name, "model.version": version}, {"history": 0})

    # -- score -------------------------------------------------------------------------
    def find_verdict(self, content_id: str) -> dict[str, Any] | None:
        return self.db[VERDICTS].find_one({"_id": content_id})

    def find_verdict_by_prefix(self, prefix: str) -> dict[str, Any] | None:
        """A verdict by full sha256 or by an unambiguous prefix of it (evidence images left out)."""
        query = {"_id": {"$gte": prefix, "$lt": prefix + "\uffff"}}
        matches = list(self.db[VERDICTS].find(query, _NO_IMAGES).limit(2))
        return matches[0] if len(matches) == 1 else None

    def known_source_size(self, uri: str) -> int | None:
        """Byte size of the content last scored at ``uri``, if any verdict lists that location."""
        document = self.db[VERDICTS].find_one({"sources": uri}, {"size_bytes": 1})
        return None if document is None else document.get("size_bytes")

    def link_source(self, content_id: str, uri: str) -> None:
        """Attach another location (a re-drop or rename) to an existing verdict."""
        self.db[VERDICTS].update_one({"_id": content_id}, {"$addToSet": {"sources": uri}})

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

    def model_versions(self) -> list[str]:
        """Model versions that have verdicts, newest first."""
        return sorted(self.db[VERDICTS].distinct("model.version"), key=_version_key, reverse=True)

    def evidence_jpeg(self, content_id: str, index: int, *, image: str = "jpeg") -> bytes | None:
        """A stored JPEG of frame ``index`` among a verdict's evidence frames, if kept: the frame
        itself (``jpeg``) or its Grad-CAM overlay (``gradcam_jpeg``)."""
        document = self.db[VERDICTS].find_one({"_id": content_id}, {"evidence": 1}) or {}
        return next((e.get(image) for e in document.get("evidence", []) if e["index"] == index), None)

    def count(self, collection: str) -> int:
        return self.db[collection].count_documents({})


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
