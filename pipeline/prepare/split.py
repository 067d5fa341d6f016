"""Deterministic train/val/test assignment by group, stratified by the group's labels."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping
from itertools import product

from pipeline.prepare.sources import Split

SPLITS: tuple[Split, ...] = ("train", "val", "test")


def assign_splits(
    group_labels: Mapping[str, Mapping[int, int]],
    hints: dict[str, Split],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, Split]:
    """Map every group to one split.

    ``group_labels`` counts items per label in each group. Groups with a split hint
    (a ``test`` folder, say) keep it, except that ``train``-hinted groups also supply the
    validation share. Unhinted groups are spread over all three splits. Within each
    stratum (the set of labels a group holds) groups are ordered by a seeded hash and
    filled up to the requested item shares, so the result depends only on the data and
    the seed. Shares alone can leave a class out of a small split (three groups of fakes
    and a 15% test share put none in test), so every split that still lacks a class then
    takes a group holding it from a split that can spare one: with three groups of a class
    and no hints in the way, that class is in train, validation and test.
    """
    splits = _fill_shares(group_labels, hints, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    _cover_every_class(splits, group_labels, hints, seed)
    return splits


def _fill_shares(
    group_labels: Mapping[str, Mapping[int, int]],
    hints: dict[str, Split],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, Split]:
    splits: dict[str, Split] = {g: s for g, s in hints.items() if s in ("test", "val")}
    pools = {"train": (0.0, val_fraction / (1 - test_fraction)), None: (test_fraction, val_fraction)}
    for hint, (test_share, val_share) in pools.items():
        members = [g for g in group_labels if hints.get(g) == hint]
        strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
        for group in members:
            strata[tuple(sorted(label for label, n in group_labels[group].items() if n))].append(group)
        for groups in strata.values():
            groups.sort(key=lambda g: _rank(seed, g))
            total = sum(sum(group_labels[g].values()) for g in groups)
            filled = 0.0
            for group in groups:
                size = sum(group_labels[group].values())
                centre = (filled + size / 2) / total
                splits[group] = "test" if centre < test_share else "val" if centre < test_share + val_share else "train"
                filled += size
    return splits


def _cover_every_class(
    splits: dict[str, Split], group_labels: Mapping[str, Mapping[int, int]], hints: dict[str, Split], seed: int
) -> None:
    """Move groups, one at a time, into each split that lacks a class, from a split that keeps
    every class it has without that group (train first, then the smallest group).

    Each move covers one more (split, class) pair and uncovers none, so this ends. Groups
    hinted ``test`` or ``val`` stay; ``train``-hinted groups may only move to validation.
    """
    labels_of = {g: [label for label, n in counts.items() if n] for g, counts in group_labels.items()}
    held = Counter((splits[g], label) for g, labels in labels_of.items() for label in labels)
    classes = sorted({label for _, label in held})

    def can_move(group: str, to: Split) -> bool:
        return (
            splits[group] != to
            and _may_move(hints.get(group), to)
            and all(held[splits[group], label] > 1 for label in labels_of[group])
        )

    def preference(group: str) -> tuple:
        return splits[group] != "train", sum(group_labels[group].values()), _rank(seed, group)

    moved = True
    while moved:
        moved = False
        for split, label in product(SPLITS, classes):
            if held[split, label]:
                continue
            movable = [g for g, labels in labels_of.items() if label in labels and can_move(g, split)]
            if movable:
                chosen = min(movable, key=preference)
                for other in labels_of[chosen]:
                    held[splits[chosen], other] -= 1
                    held[split, other] += 1
                splits[chosen] = split
                moved = True


def _may_move(hint: Split | None, to: Split) -> bool:
    return hint is None or (hint == "train" and to in ("train", "val"))


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()
