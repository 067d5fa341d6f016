import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.aggregate import RULES, aggregate


@given(st.lists(st.floats(0, 1), min_size=1, max_size=64), st.sampled_from(sorted(RULES)))
def test_every_rule_stays_within_the_frame_scores(probs, rule):
    score = aggregate(np.array(probs), rule)
    assert min(probs) - 1e-12 <= score <= max(probs) + 1e-12


def test_rules_differ_where_a_few_frames_are_manipulated():
    probs = np.array([0.05] * 24 + [0.95] * 8)
    assert aggregate(probs, "mean") == pytest.approx(0.275)
    assert aggregate(probs, "topk_mean") == pytest.approx(0.95)
    assert aggregate(probs, "confident") == pytest.approx(0.275)  # 8 of 32 is too few to trust
    assert aggregate(np.array([0.9] * 20 + [0.1] * 12), "confident") == pytest.approx(0.9)


def test_no_frames_is_an_error():
    with pytest.raises(ValueError, match="no frame scores"):
        aggregate(np.array([]), "mean")


def test_the_rule_that_separates_validation_media_best_is_chosen():
    from pipeline.aggregate import choose_rule

    # Fakes manipulated in a few frames only: the top-k mean sees them, the plain mean does not.
    fakes = [np.array([0.1] * 12 + [0.9] * 4) + i * 0.001 for i in range(5)]
    reals = [np.array([0.35] * 16) + i * 0.001 for i in range(5)]  # higher mean, lower peaks
    rule, aucs = choose_rule(fakes + reals, np.array([1] * 5 + [0] * 5))
    assert rule == "topk_mean" and aucs["topk_mean"] == 1.0 and aucs["mean"] < 1.0


def test_ties_go_to_the_plain_mean_and_one_class_cannot_choose():
    from pipeline.aggregate import choose_rule

    rule, _ = choose_rule([np.array([0.9, 0.9]), np.array([0.1, 0.1])], np.array([1, 0]))
    assert rule == "mean"
    assert choose_rule([np.array([0.9])], np.array([1])) == ("mean", {})
