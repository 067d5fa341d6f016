import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from pipeline.model.evaluate import VERDICT_BANDS, verdict_metrics
from pipeline.verdicts import BETWEEN, OUTSIDE


def test_a_small_labelled_set_gives_every_figure():
    labels = [0, 0, 0, 1, 1, 1]
    probabilities = [0.1, 0.5, 0.9, 0.8, 0.6, 0.2]
    verdicts = ["real", "uncertain", "fake", "fake", "uncertain", "real"]
    reasons = [None, BETWEEN, None, None, OUTSIDE, None]
    result = verdict_metrics(labels, probabilities, verdicts, reasons)
    assert result["media"] == 6 and result["labels"] == {"real": 3, "fake": 3}
    assert result["confusion"] == {
        "real": {"real": 1, "uncertain": 1, "fake": 1},
        "fake": {"real": 1, "uncertain": 1, "fake": 1},
    }
    assert result["coverage"] == pytest.approx(4 / 6)
    assert result["confident_accuracy"] == pytest.approx(2 / 4)  # real->real and fake->fake of four confident
    assert result["confident_wrong_rate"] == pytest.approx(2 / 6)
    assert result["abstentions"] == {OUTSIDE: 1, BETWEEN: 1}
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities)) and result["roc_auc_note"] is None


def test_one_class_has_no_roc_auc_and_says_why():
    result = verdict_metrics([1, 1], [0.9, 0.2], ["fake", "real"], [None, None])
    assert result["roc_auc"] is None and result["roc_auc_note"] == "only fake media: ROC-AUC needs both real and fake"
    assert result["confident_accuracy"] == 0.5 and result["abstentions"] == {OUTSIDE: 0, BETWEEN: 0}


def test_nothing_scored_gives_none_not_nan():
    result = verdict_metrics([], [], [], [])
    assert result["media"] == 0 and result["roc_auc_note"] == "no media was scored"
    assert result["roc_auc"] is result["coverage"] is result["confident_accuracy"] is None
    json.dumps(result, allow_nan=False)


def test_all_abstained_has_no_accuracy_but_full_abstention_counts():
    result = verdict_metrics([0, 1], [0.5, 0.5], ["uncertain"] * 2, [OUTSIDE, OUTSIDE])
    assert result["coverage"] == 0 and result["confident_accuracy"] is None and result["confident_wrong_rate"] == 0
    assert result["abstentions"] == {OUTSIDE: 2, BETWEEN: 0} and result["roc_auc"] == 0.5


@pytest.mark.parametrize(
    ("labels", "verdicts", "reasons"),
    [([0, 1], ["real"], [None]), ([0], ["Fake"], [None]), ([2], ["real"], [None]), ([0], ["real"], [])],
)
def test_inconsistent_input_is_refused(labels, verdicts, reasons):
    with pytest.raises(ValueError):
        verdict_metrics(labels, [0.5] * len(labels), verdicts, reasons)


media_item = st.tuples(
    st.sampled_from([0, 1]),
    st.floats(0, 1),
    st.sampled_from([("real", None), ("fake", None), ("uncertain", OUTSIDE), ("uncertain", BETWEEN)]),
)


@given(st.lists(media_item, max_size=40))
def test_the_figures_account_for_every_item(items):
    labels = [label for label, _, _ in items]
    verdicts = [verdict for _, _, (verdict, _) in items]
    result = verdict_metrics(labels, [p for _, p, _ in items], verdicts, [reason for _, _, (_, reason) in items])
    json.dumps(result, allow_nan=False)  # None where undefined: standard JSON as it is
    confusion = result["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == result["media"] == len(items)
    assert {name: sum(row.values()) for name, row in confusion.items()} == result["labels"]
    assert sum(result["abstentions"].values()) == verdicts.count("uncertain")
    confident = sum(confusion[name][band] for name in confusion for band in VERDICT_BANDS if band != "uncertain")
    right = confusion["real"]["real"] + confusion["fake"]["fake"]
    if items:
        assert result["coverage"] == pytest.approx(confident / len(items))
        assert result["confident_wrong_rate"] == pytest.approx((confident - right) / len(items))
    assert (result["confident_accuracy"] is None) == (confident == 0)
    assert (result["roc_auc"] is None) == (len(set(labels)) < 2) == (result["roc_auc_note"] is not None)
    assert result["roc_auc"] is None or 0 <= result["roc_auc"] <= 1
