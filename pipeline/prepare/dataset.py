"""Assemble processed items into a deduplicated, grouped, split and balanced dataset."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from upath import UPath

from pipeline.prepare.process import ItemResult
from pipeline.prepare.sources import LABEL_NAMES, PrepareError, Rejected
from pipeline.prepare.split import SPLITS, assign_splits
from pipeline.settings import PrepareSettings

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
    manifest_path: UPath
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
    datasets_dir: UPath,
) -> Dataset:
    """Deduplicate by content, group near-duplicates, split by group, balance, write the manifest.

    Raises :class:`PrepareError`, before writing anything, when nothing is kept or when a
    split lacks a class: such a dataset can be neither trained nor evaluated.
    """
    quarantined = [Quarantined(r.uri, "", r.reason) for r in rejected]
    quarantined += [Quarantined(r.uri, r.content_id, r.reason) for r in results if r.reason]
    kept, duplicates, conflicts = _deduplicate([r for r in results if not r.reason])
    quarantined += conflicts
    if not kept:
        raise PrepareError(_nothing_kept(quarantined))
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
    if missing := missing_classes(manifest):
        raise PrepareError(_split_advice(missing, manifest))
    manifest, class_weight = _balance(manifest, settings)
    manifest_hash = _content_hash(manifest)
    dataset_id = f"ds-{manifest_hash[:12]}"
    path = datasets_dir / dataset_id / "manifest.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        manifest.to_parquet(handle, index=False)
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


def missing_classes(manifest: pd.DataFrame) -> list[tuple[str, str]]:
    """(split, class name) for each class a split lacks: training and evaluation need both in each."""
    present = set(zip(manifest["split"], manifest["label"], strict=True))
    return [(split, name) for split in SPLITS for label, name in LABEL_NAMES.items() if (split, label) not in present]


def check_trainable(manifest: pd.DataFrame, dataset_id: str, source_uri: str) -> None:
    """Refuse a recorded dataset that lacks a class in a split (one recorded before prepare refused them)."""
    if missing := missing_classes(manifest):
        raise PrepareError(
            f"dataset {dataset_id} cannot be trained and evaluated: {_lacks(missing)}. Run prepare on its "
            f"source ({source_uri}) again: it spreads each class over every split, or says what the source lacks"
        )


def _lacks(missing: list[tuple[str, str]]) -> str:
    return ", ".join(f"{split} has no {name} media" for split, name in missing)


def _nothing_kept(quarantined: list[Quarantined]) -> str:
    if not quarantined:
        return (
            "the source holds no files: put images or videos in class folders (real/, fake/) "
            "or list them in a labels.csv (file_name,label) at its top"
        )
    reasons = Counter(q.reason for q in quarantined).most_common()
    shown = "; ".join(f"{reason} ({count} file{'s' * (count > 1)})" for reason, count in reasons[:3])
    more = f"; and {len(reasons) - 3} other reason(s)" if len(reasons) > 3 else ""
    return (
        f"no media kept: all {len(quarantined)} file(s) of the source were refused: {shown}{more}. "
        "Fix what these reasons name and run prepare again; no dataset was recorded"
    )


def _split_advice(missing: list[tuple[str, str]], manifest: pd.DataFrame) -> str:
    """Why the split lacks a class, and what to change in the source."""
    advice = []
    for label, name in LABEL_NAMES.items():
        splits = [split for split, lacking in missing if lacking == name]
        if not splits:
            continue
        groups = manifest.loc[manifest["label"] == label, "group"].nunique()
        if groups == 0:
            advice.append(f"the source has no {name} media at all: add some ({name}/ folders or {name} rows)")
        elif groups < len(SPLITS):
            advice.append(
                f"{name} media fall in only {groups} group(s), and a group goes whole into one split: "
                f"add {name} media from at least {len(SPLITS) - groups} more group(s) (other source videos, "
                "scenes or people; labels.csv's group column names them, else each file and its near-duplicates "
                "are one group)"
            )
        else:  # enough groups: only split hints, which groups keep, stand in the way
            advice.append(
                f"the source's split folders or split column put no {name} media in {' and '.join(splits)}: "
                f"add {name} media there, or drop the split folders/column and let prepare split by group"
            )
    return f"cannot split the dataset: {_lacks(missing)}. To fix it, {'; '.join(advice)}. No dataset was recorded"


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
        "brightness": [item.brightness for item, _, _ in rows],
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
