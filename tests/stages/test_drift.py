"""Drift checks on real scoring by the trained champion: a batch like the training data is not reported as drift, a
shifted batch is, in MongoDB, MLflow, the log and the CLI.

Verdicts go to the test's own database (the ``store`` fixture), so the package's other tests find only theirs."""

import json
import logging

import cv2
import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import tracking
from pipeline.cli import app
from pipeline.settings import get_settings
from pipeline.stages import drift, score
from pipeline.store import DRIFT
from pipeline.synthetic import PHOTOS, make_labelled_set, photo, random_crop

pytestmark = pytest.mark.slow
INPUTS = {"short_side", "bits_per_pixel", "brightness", "format"}


def shifted_batch(folder, rng, count: int) -> list:
    """Larger, brighter PNGs: another camera, format and exposure than the training media."""
    folder.mkdir()
    paths = []
    for index, name in enumerate((PHOTOS * 3)[:count]):
        crop = cv2.resize(random_crop(photo(name), rng), (480, 480), interpolation=cv2.INTER_CUBIC)
        bright = np.clip(crop.astype(np.int16) + 80, 0, 255).astype(np.uint8)
        paths.append(folder / f"{name}-{index}.png")
        assert cv2.imwrite(str(paths[-1]), cv2.cvtColor(bright, cv2.COLOR_RGB2BGR))
    return paths


def test_drift_is_reported_for_a_shifted_batch_and_not_for_one_like_the_training_data(
    world, store, mongo_uri, tmp_path, monkeypatch, caplog, request
):
    like = make_labelled_set(tmp_path / "like", crops_per_photo=1, videos=1, seed=11)  # 28 images, 2 videos
    batch = like.images + like.videos
    for name, value in {"MONGO_URI": mongo_uri, "MEDIACHECK_MONGO__DATABASE": store.db.name,
                        "MEDIACHECK_DRIFT__WINDOW_MEDIA": batch, "MEDIACHECK_DRIFT__MIN_MEDIA": 8}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)  # before monkeypatch restores the world's environment
    settings = get_settings()
    loaded = score.load_champion(settings)

    def score_all(paths) -> None:
        results = [score.score_uri(path.as_uri(), loaded, settings, store, settle_s=0) for path in paths]
        assert {r["status"] for r in results} == {"scored"}

    score_all(sorted(like.root.glob("images/*.jpg")) + sorted(like.root.glob("videos/*.mp4")))
    caplog.set_level(logging.INFO, logger="pipeline.stages.drift")
    unshifted = drift.check(settings, store)
    champion = tracking.champion(settings)
    assert unshifted.model == champion and len(unshifted.content_ids) == batch
    compared = {s.statistic for s in unshifted.statistics if s.note is None}
    assert compared >= INPUTS, [s.describe() for s in unshifted.statistics]
    assert unshifted.drifted == [], unshifted.summary()
    in_order = [s.statistic for s in unshifted.statistics if s.note is None]
    expected = f"{batch} scored media: no drift from the training data in {', '.join(in_order)}"
    assert unshifted.summary().endswith(expected)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    score_all(shifted_batch(tmp_path / "shifted", np.random.default_rng(5), batch))
    found = drift.check(settings, store)
    assert {"short_side", "format", "brightness"} <= {s.statistic for s in found.drifted}, found.summary()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "drifted from the training data in" in warnings[0] and "format" in warnings[0]

    stored = store.drift_checks(limit=5, content_ids=True)
    assert [c["drifted"] for c in stored] == [True, False]
    assert stored[0]["statistics"]["format"]["window"] == {"image/png": 1.0}
    assert set(stored[0]["window"]["content_ids"]) == set(found.content_ids)
    history = mlflow.MlflowClient().get_metric_history(champion.run_id, "drift_detected")
    assert [m.value for m in sorted(history, key=lambda m: m.step)][-2:] == [0.0, 1.0]

    result = CliRunner().invoke(app, ["drift", "--format", "json"])  # nothing new scored: the same check again
    assert result.exit_code == 1, result.output
    printed = json.loads(result.stdout)
    assert printed["drifted_statistics"] == [s.statistic for s in found.drifted] and "content_ids" not in printed
    assert store.db[DRIFT].count_documents({}) == 2  # the unchanged window is not stored twice
    assert len(mlflow.MlflowClient().get_metric_history(champion.run_id, "drift_detected")) == len(history)
