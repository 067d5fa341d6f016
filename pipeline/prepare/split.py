"""Deterministic train/val/test assignment by group, stratified by the group's labels."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping

from pipeline.prepare.sources import Split


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
    the seed.
    """
    splits: dict[str, Split] = {g: s for g, s in hints.items() if s in ("test", "val")}
    pools = {"train": (0.0, val_fraction / (1 - test_fraction)), None: (test_fraction, val_fraction)}
    for hint, (test_share, val_share) in pools.items():
        members = [g for g in group_labels if hints.get(g) == hint]
        strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
        for group in members:
            strata[tuple(sorted(label for label, n in group_labels[group].items() if n))].append(group)
        for groups in strata.values():
            groups.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
            total = sum(sum(group_labels[g].values()) for g in groups)
            filled = 0.0
            for group in groups:
                size = sum(group_labels[group].values())
                centre = (filled + size / 2) / total
                splits[group] = "test" if centre < test_share else "val" if centre < test_share + val_share else "train"
                filled += size
    return splits
