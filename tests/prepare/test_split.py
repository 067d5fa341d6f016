from collections import Counter

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
