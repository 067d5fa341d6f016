"""Assemble processed items into a deduplicated, grouped, split and balanced dataset."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.prepare.process import ItemResult
from pipeline.prepare.sources import Rejected
from pipeline.prepare.split import assign_splits
from pipeline.settings import PrepareSettings

LABEL_NAMES = {0: "real", 1: "fake"}
LABEL_CONFLICT = "same content under both labels (real and fake)"


@dataclass
class Quarantined:
    uri: str
    content_id: str
    reason: str


@dataclass
class Dataset:
    """A dataset version: its manifest (one row per frame) and what happened to every input."""

    dataset_id: str
    manifest_path: Path
    manifest_hash: str
    manifest: pd.DataFrame
    counts: dict[str, dict[str, int]]
    class_weight: dict[int, float]
    config: dict
    media: list[ItemResult]
    quarantined: list[Quarantined]
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (uri, uri it duplicates)

    @property
    def totals(self) -> dict[str, int]:
        kept, dup, bad = len(self.media), len(self.duplicates), len(self.quarantined)
        return {"input": kept + dup + bad, "kept": kept, "duplicate": dup, "quarantined": bad}


def assemble_dataset(
    results: list[ItemResult],
    rejected: list[Rejected],
    settings: PrepareSettings,
    datasets_dir: Path,
) -> Dataset:
    """Deduplicate by content, group near-duplicates, split by group, balance, write the manifest."""
    quarantined = [Quarantined(r.uri, "", r.reason) for r in rejected]
    quarantined += [Quarantined(r.uri, r.content_id, r.reason) for r in results if r.reason]
    kept, duplicates, conflicts = _deduplicate([r for r in results if not r.reason])
    quarantined += conflicts
    groups = _group_keys(kept)
    group_labels: dict[str, dict[int, int]] = {}  # plain dicts: a Counter per group cost 5 us each
    hint_votes: dict[str, dict[str, int]] = {}
    for item in kept:
        labels = group_labels.setdefault(groups[item.content_id], {})
        labels[item.label] = labels.get(item.label, 0) + 1
        if item.split:
            votes = hint_votes.setdefault(groups[item.content_id], {})
            votes[item.split] = votes.get(item.split, 0) + 1
    hints = {group: max(votes, key=votes.__getitem__) for group, votes in hint_votes.items()}
    splits = assign_splits(
        group_labels,
        hints,
        val_fraction=settings.val_fraction,
        test_fraction=settings.test_fraction,
        seed=settings.seed,
    )
    manifest = _manifest(kept, groups, splits, settings)
    manifest, class_weight = _balance(manifest, settings)
    manifest_hash = _content_hash(manifest)
    dataset_id = f"ds-{manifest_hash[:12]}"
    path = datasets_dir / dataset_id / "manifest.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(path, index=False)
    return Dataset(
        dataset_id,
        path,
        manifest_hash,
        manifest,
        _counts(manifest),
        class_weight,
        settings.model_dump(mode="json"),
        kept,
        quarantined,
        duplicates,
    )


def _content_hash(manifest: pd.DataFrame) -> str:
    """sha256 over column names and per-row hashes: the same rows give the same id (CSV text took seconds)."""
    digest = hashlib.sha256("\0".join(manifest.columns).encode())
    digest.update(pd.util.hash_pandas_object(manifest, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _deduplicate(items: list[ItemResult]) -> tuple[list[ItemResult], list[tuple[str, str]], list[Quarantined]]:
    by_content: dict[str, list[ItemResult]] = defaultdict(list)
    for item in sorted(items, key=lambda r: r.uri):
        by_content[item.content_id].append(item)
    kept, duplicates, conflicts = [], [], []
    for cid, same in by_content.items():
        if len({r.label for r in same}) > 1:
            conflicts += [Quarantined(r.uri, cid, LABEL_CONFLICT) for r in same]
            continue
        kept.append(same[0])
        duplicates += [(r.uri, same[0].uri) for r in same[1:]]
    return kept, duplicates, conflicts


def _group_keys(items: list[ItemResult]) -> dict[str, str]:
    """Group per content id: the declared group, merged with images that share a perceptual hash."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    first_with_hash: dict[str, str] = {}
    for item in items:
        own = item.group or f"content:{item.content_id[:16]}"
        find(own)
        if item.kind == "image":
            other = first_with_hash.setdefault(item.frames[0].phash, own)
            parent[find(own)] = find(other)
    return {item.content_id: find(item.group or f"content:{item.content_id[:16]}") for item in items}


def _manifest(
    items: list[ItemResult], groups: dict[str, str], splits: dict[str, str], settings: PrepareSettings
) -> pd.DataFrame:
    rows = [(item, frame, groups[item.content_id]) for item in items for frame in item.frames]
    columns = {  # built by column: a dict per row cost more than the rest of the manifest
        "content_id": [item.content_id for item, _, _ in rows],
        "source_uri": [item.uri for item, _, _ in rows],
        "kind": [item.kind for item, _, _ in rows],
        "label": [item.label for item, _, _ in rows],
        "group": [group for _, _, group in rows],
        "split": [splits[group] for _, _, group in rows],
        "frame_index": [frame.index for _, frame, _ in rows],
        "time_s": [float(frame.time_s) for _, frame, _ in rows],
        "frame_path": [frame.path for _, frame, _ in rows],
        "phash": [frame.phash for _, frame, _ in rows],
        "width": [item.width for item, _, _ in rows],
        "height": [item.height for item, _, _ in rows],
        "codec": [item.codec for item, _, _ in rows],
        "fps": [item.fps for item, _, _ in rows],
        "duration_s": [item.duration_s for item, _, _ in rows],
        "bits_per_pixel": [item.bits_per_pixel for item, _, _ in rows],
        "method": [item.method or "" for item, _, _ in rows],
    }
    constants = {"resize_policy": settings.resize_policy, "crop": settings.crop, "frame_size": settings.frame_size}
    frame = pd.DataFrame(columns | {name: [value] * len(rows) for name, value in constants.items()})
    frame["sample_weight"] = 1.0
    return frame.sort_values(["split", "content_id", "frame_index"], ignore_index=True)


def _balance(manifest: pd.DataFrame, settings: PrepareSettings) -> tuple[pd.DataFrame, dict[int, float]]:
    """Balance the training frames by the configured policy; validation and test stay as they are."""
    train = manifest["split"] == "train"
    counts = manifest.loc[train, "label"].value_counts().to_dict()
    if len(counts) < 2:
        return manifest, {label: 1.0 for label in counts}
    rng = np.random.default_rng(settings.seed)
    if settings.balance == "class_weight":
        total = sum(counts.values())
        weights = {int(k): total / (2 * v) for k, v in counts.items()}
        manifest.loc[train, "sample_weight"] = manifest.loc[train, "label"].map(weights)
        return manifest, weights
    target = min(counts.values()) if settings.balance == "undersample" else max(counts.values())
    parts = [manifest[~train]]
    for label, count in counts.items():
        rows = manifest[train & (manifest["label"] == label)]
        picks = rng.choice(len(rows), size=target, replace=target > count) if count != target else np.arange(count)
        parts.append(rows.iloc[np.sort(picks)])
    balanced = pd.concat(parts, ignore_index=True).sort_values(
        ["split", "content_id", "frame_index"], ignore_index=True
    )
    return balanced, {0: 1.0, 1: 1.0}


def _counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split]
        counts[split] = {}
        for label, name in LABEL_NAMES.items():
            labelled = rows[rows["label"] == label]
            counts[split][f"{name}_items"] = int(labelled["content_id"].nunique())
            counts[split][f"{name}_frames"] = len(labelled)
    return counts
