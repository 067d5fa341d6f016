from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prepare.split import assign_splits

group_sizes = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=6),
    st.tuples(st.integers(0, 5), st.integers(0, 5)).filter(sum),
    min_size=1,
    max_size=60,
)


def _labels(sizes):
    return {g: Counter({0: real, 1: fake}) for g, (real, fake) in sizes.items()}


@given(sizes=group_sizes, seed=st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_every_group_gets_exactly_one_split_deterministically(sizes, seed):
    labels = _labels(sizes)
    first = assign_splits(labels, {}, val_fraction=0.15, test_fraction=0.15, seed=seed)
    assert set(first) == set(labels) and set(first.values()) <= {"train", "val", "test"}
    assert first == assign_splits(labels, {}, val_fraction=0.15, test_fraction=0.15, seed=seed)


def test_shares_are_close_to_requested_and_stratified():
    labels = _labels({f"r{i}": (2, 0) for i in range(200)} | {f"f{i}": (0, 2) for i in range(200)})
    splits = assign_splits(labels, {}, val_fraction=0.15, test_fraction=0.15, seed=7)
    for prefix in "rf":
        counts = Counter(s for g, s in splits.items() if g.startswith(prefix))
        assert abs(counts["test"] - 30) <= 2 and abs(counts["val"] - 30) <= 2


def test_hints_are_honoured_and_validation_comes_from_train():
    labels = _labels({f"g{i}": (1, 1) for i in range(100)})
    hints = {f"g{i}": ("test" if i < 20 else "train") for i in range(100)}
    splits = assign_splits(labels, hints, val_fraction=0.15, test_fraction=0.15, seed=1)
    assert all(splits[f"g{i}"] == "test" for i in range(20))
    assert Counter(splits[f"g{i}"] for i in range(20, 100))["val"] > 5


def _classes_by_split(labels, splits):
    return {(splits[g], label) for g, counts in labels.items() for label, n in counts.items() if n}


groups_of_both_classes = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 6)).filter(sum), min_size=3, max_size=20
).filter(lambda sizes: all(sum(1 for size in sizes if size[label]) >= 3 for label in (0, 1)))


@given(sizes=groups_of_both_classes, val=st.floats(0.05, 0.45), test=st.floats(0.05, 0.45), seed=st.integers(0, 99))
@settings(max_examples=150, deadline=None)
def test_three_groups_of_each_class_put_each_class_in_every_split(sizes, val, test, seed):
    labels = _labels({f"g{i}": size for i, size in enumerate(sizes)})
    splits = assign_splits(labels, {}, val_fraction=val, test_fraction=test, seed=seed)
    assert _classes_by_split(labels, splits) == {(s, label) for s in ("train", "val", "test") for label in (0, 1)}


@pytest.mark.shared_data
def test_the_shared_clips_groups_give_fakes_to_test(shared_datasets):
    """The 40 shared clips by their MANIFEST groups: three face pairs hold every fake; shares alone put none in test."""
    import csv

    rows = list(csv.DictReader((shared_datasets / "videos" / "MANIFEST.tsv").open(), delimiter="\t"))
    labels = {}
    for row in rows:
        labels.setdefault(row["group"], Counter())[int(row["label"] == "fake")] += 1
    splits = assign_splits(labels, {}, val_fraction=0.15, test_fraction=0.15, seed=1337)
    assert _classes_by_split(labels, splits) == {(s, label) for s in ("train", "val", "test") for label in (0, 1)}
    fake_groups = Counter(splits[g] for g, counts in labels.items() if counts[1])
    assert fake_groups == {"train": 1, "val": 1, "test": 1}


def test_hinted_groups_stay_where_the_source_put_them():
    """A test folder without fakes is the source's choice: the split does not fill it from train."""
    labels = _labels({f"r{i}": (1, 0) for i in range(5)} | {f"f{i}": (0, 1) for i in range(5)})
    hints = {g: ("test" if g.startswith("r") and g < "r2" else "train") for g in labels}
    splits = assign_splits(labels, hints, val_fraction=0.15, test_fraction=0.15, seed=3)
    assert {g for g, s in splits.items() if s == "test"} == {"r0", "r1"}
    assert {label for g, s in splits.items() if s == "val" for label in labels[g] if labels[g][label]} == {0, 1}
