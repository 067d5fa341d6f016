"""Drift statistics: the PSI and test rule on known shifts, small windows, formats, and the bundle's reference file."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.media.stats import MediaStats
from pipeline.model.drift import DriftReference, MediaProfile, _numeric_psi, compare
from pipeline.settings import DriftSettings

RULE = DriftSettings(min_media=30, psi_threshold=0.25, significance=0.01)


def profiles(n: int, *, seed: int, side: int = 192, codec: str = "jpeg", light: float = 0.45) -> list[MediaProfile]:
    rng = np.random.default_rng(seed)
    return [
        MediaProfile.from_stats(
            MediaStats("image", side, side, codec, bits_per_pixel=float(rng.normal(2.0, 0.2))),
            brightness=float(np.clip(rng.normal(light, 0.08), 0, 1)),
            probability=float(rng.beta(2, 2)),
        )
        for _ in range(n)
    ]


def reference(n: int = 400, seed: int = 0) -> DriftReference:
    training = profiles(n, seed=seed)
    return DriftReference.fit(training, [p.probability for p in training], limit=2000, seed=0)


def by_name(results):
    return {r.statistic: r for r in results}


def test_a_window_from_the_training_distribution_has_not_drifted():
    results = by_name(compare(reference(), profiles(200, seed=1), RULE))
    assert not any(r.drifted for r in results.values())
    assert results["brightness"].psi < 0.1 and results["brightness"].p_value > RULE.significance
    assert results["format"].psi == pytest.approx(0.0)
    assert results["fps"].note.startswith("too few")  # images have no frame rate


def test_larger_brighter_pngs_drift_in_exactly_what_changed():
    results = by_name(compare(reference(), profiles(200, seed=1, side=720, codec="png", light=0.75), RULE))
    assert {name for name, r in results.items() if r.drifted} == {"short_side", "format", "brightness"}
    assert results["format"].window == {"image/png": 1.0}
    brightness = results["brightness"]
    assert brightness.describe() == (
        f"brightness: PSI {brightness.psi:.2f}, ks p={brightness.p_value:.2g} "
        f"(training median {brightness.reference['median']:.3g}, now {brightness.window['median']:.3g})"
    )
    assert brightness.window["median"] == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("seed", range(3))
def test_a_large_psi_on_a_handful_of_media_is_not_drift(seed):
    few = profiles(6, seed=seed)  # the training distribution: sparse bins make the PSI large, the test says chance
    results = compare(reference(), few, RULE.model_copy(update={"min_media": 5}))
    assert any(r.psi > RULE.psi_threshold for r in results if r.psi is not None)
    assert not any(r.drifted for r in results)
    assert all(r.note and not r.drifted for r in compare(reference(), few, RULE))  # below min_media: not compared


def test_media_kinds_only_count_where_a_statistic_applies():
    video = MediaProfile.from_stats(MediaStats("video", 640, 360, "h264", 25.0, 4.0, 0.1), brightness=0.5)
    image = MediaProfile.from_stats(MediaStats("image", 640, 360, "jpeg", 0.0, 0.0, 2.0), brightness=0.5)
    assert (video.value("fps"), image.value("fps"), image.value("duration_s")) == (25.0, None, None)
    assert (video.value("format"), image.value("short_side")) == ("video/h264", 360.0)


def test_a_verdict_without_brightness_still_gives_a_profile():
    document = {"input": MediaStats("image", 64, 48, "png", bits_per_pixel=3.0).to_dict(), "probability": 0.2}
    profile = MediaProfile.from_verdict(document)
    assert (profile.value("brightness"), profile.value("probability"), profile.value("short_side")) == (None, 0.2, 48.0)


def test_the_reference_round_trips_through_the_bundle_folder(tmp_path):
    assert DriftReference.load(tmp_path) is None  # a bundle from before drift monitoring
    fitted = reference(n=50)
    fitted.save(tmp_path)
    assert DriftReference.load(tmp_path).values == fitted.values
    assert len(fitted.values["probability"]) == 50 and fitted.values["format"] == ["image/jpeg"] * 50


def test_the_reference_keeps_a_seeded_sample_of_at_most_the_limit():
    training = profiles(300, seed=3)
    one, two = (DriftReference.fit(training, [0.5] * 300, limit=100, seed=7) for _ in range(2))
    assert one.values == two.values and len(one.values["brightness"]) == 100


@pytest.mark.parametrize("shifted", [96.0, 384.0])
def test_a_constant_reference_still_sees_values_below_and_above_it(shifted):
    assert _numeric_psi(np.full(50, 192.0), np.full(50, 192.0)) == pytest.approx(0.0)
    assert _numeric_psi(np.full(50, 192.0), np.full(50, shifted)) > 5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=5, max_size=80),
    st.lists(st.floats(0, 1), min_size=5, max_size=80),
)
def test_psi_is_never_negative_and_zero_on_identical_samples(seen, now):
    assert _numeric_psi(np.array(seen), np.array(now)) >= -1e-12
    assert _numeric_psi(np.array(seen), np.array(seen)) == pytest.approx(0.0, abs=1e-12)
