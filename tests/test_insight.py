"""The notebooks' helpers: tables and figures from manifests and verdicts, and rescoring stored media."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import matplotlib
import numpy as np
import pandas as pd
import pytest

from pipeline import insight
from pipeline.media.images import encode_jpeg
from pipeline.settings import load_settings
from pipeline.tracking import ModelRef

matplotlib.use("Agg")
ROOT = "/data/source"


def _manifest() -> pd.DataFrame:
    """Two images and a video of three frames, the video's frames repeated as oversampling repeats them."""
    rows = [
        ("a", f"{ROOT}/real/a.jpg", "image", 0, "train", "a.jpg", 640, 480, 0.0, ""),
        ("b", f"{ROOT}/fake/sd/b.png", "image", 1, "test", "b.jpg", 512, 512, 0.0, "stable-diffusion"),
        *[("c", f"{ROOT}/c.mp4", "video", 1, "train", f"c-{i}.jpg", 1920, 1080, 4.0, None) for i in (0, 1, 2, 0)],
    ]
    columns = ["content_id", "source_uri", "kind", "label", "split", "frame_path", "width", "height", "duration_s"]
    return pd.DataFrame(rows, columns=[*columns, "method"])


def test_the_store_and_the_lines_saying_where_it_is_come_from_the_settings(settings, mongo_uri):
    configured = load_settings(mongo={"uri": mongo_uri, "database": "insight_where"})
    store = insight.open_store(configured)
    try:
        assert store.db.name == "insight_where" and store.count("verdicts") == 0
        described = insight.where(configured, store)
        assert "tiny.yaml" in described and "database 'insight_where'" in described
        assert f"sqlite:///{configured.storage.local_root / 'mlflow.db'}" in described
    finally:
        store.client.close()


def test_media_items_are_one_row_each_with_class_source_generator_and_distinct_frames():
    items = insight.media_items(_manifest(), "file://" + ROOT + "/").set_index("content_id")
    assert list(items.index) == ["a", "b", "c"]
    assert items["class"].tolist() == ["real", "fake", "fake"]
    assert items["source"].tolist() == ["real", "fake", "."]
    assert items["method"].tolist() == ["-", "stable-diffusion", "-"]
    assert items["frames"].tolist() == [1, 1, 3]


@pytest.mark.parametrize(
    ("uri", "root", "source"),
    [
        ("s3://b/p/gen/x/y.jpg", "s3://b/p", "gen"),
        ("/d/x.jpg", "/d", "."),
        ("file:///d/a/x.jpg", "/d/", "a"),
        ("/elsewhere/f/x.jpg", "/d", "f"),
    ],
)
def test_the_source_is_the_first_folder_under_the_dataset_source(uri, root, source):
    assert insight.source_of(uri, root) == source


def test_frame_samples_take_up_to_n_items_of_each_class():
    samples = insight.frame_samples(_manifest(), per_class=5)
    assert sorted(samples["content_id"]) == ["a", "b", "c"]
    assert insight.frame_samples(_manifest(), per_class=1)["label"].tolist() == [0, 1]


def test_worst_errors_are_confident_mistakes_most_confident_first():
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([0.9, 0.05, 0.4, 0.2, 0.45])
    assert insight.worst_errors(labels, probs, 5).tolist() == [1, 0, 2, 4]
    assert insight.worst_errors(labels, probs, 1).tolist() == [1]
    assert insight.worst_errors(np.array([0, 1]), np.array([0.1, 0.9]), 3).size == 0


def _verdict(minute: int, verdict: str | None, version: str = "1", **fields) -> dict:
    at = datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(minutes=minute)
    return {"_id": f"id{minute}", "source_uri": f"file:///in/m{minute}.jpg", "kind": "image", "verdict": verdict,
            "model": {"version": version}, "scored_at": at, "created_at": at, **fields}  # fmt: skip


def test_verdicts_are_counted_per_time_bin_and_band_quiet_bins_included():
    table = insight.verdict_table([_verdict(0, "real"), _verdict(1, "fake"), _verdict(5, None), _verdict(4, "real")])
    assert table["band"].tolist() == ["failed", "real", "fake", "real"]  # newest first; no verdict: failed
    assert table["model"].unique().tolist() == ["v1"] and table["file"].tolist()[-1] == "m0.jpg"
    counts = insight.counts_over_time(table)
    assert list(counts.columns) == list(insight.BANDS) and counts.index.name == "scored (1min bins)"
    assert len(counts) == 6 and counts.sum().to_dict() == {"real": 2, "uncertain": 0, "fake": 1, "failed": 1}
    assert counts.iloc[2:4].to_numpy().sum() == 0  # minutes 2 and 3: no verdicts, still on the time axis
    assert insight.counts_over_time(table.head(0)).empty


@pytest.mark.parametrize(("span", "freq"), [(timedelta(0), "1min"), (timedelta(hours=3), "10min"),
                                            (timedelta(days=3), "6h"), (timedelta(days=400), "30D")])  # fmt: skip
def test_time_bins_grow_with_the_span(span, freq):
    first = pd.Timestamp("2026-01-01", tz="UTC")
    assert insight.time_bin(first, first + span) == freq


def test_side_by_side_puts_disagreements_first():
    scores = pd.DataFrame(
        [
            ("x", "x.jpg", "v1", 0.1, "real"),
            ("x", "x.jpg", "v2", 0.2, "real"),
            ("y", "y.mp4", "v1", 0.5, "uncertain"),
            ("y", "y.mp4", "v2", 0.9, "fake"),
        ],
        columns=["content_id", "file", "model", "probability", "verdict"],
    )
    compared = insight.side_by_side(scores)
    assert compared["file"].tolist() == ["y.mp4", "x.jpg"] and compared["disagree"].tolist() == [True, False]
    assert compared.loc[0, "verdict v2"] == "fake" and compared.loc[0, "probability v1"] == 0.5


def test_a_frame_timeline_draws_every_frame_over_the_three_bands():
    frames = [{"time_s": t, "probability": p} for t, p in ((0.0, 0.2), (1.0, 0.9), (2.0, 0.5))]
    verdict = {"bands": {"real_below": 0.3, "fake_from": 0.7}, "frames": frames, "probability": 0.53,
               "aggregation": "mean", "source_uri": "file:///in/v.mp4", "verdict": "uncertain",
               "model": {"version": "3"}}  # fmt: skip
    (ax,) = insight.frame_timeline(verdict).axes
    line = next(line for line in ax.get_lines() if line.get_label() == "frame P(fake)")
    assert list(line.get_ydata()) == [0.2, 0.9, 0.5] and len(ax.patches) == 3  # one shaded area per band
    assert ax.get_title() == "v.mp4: uncertain (model v3)"


def test_evidence_frames_come_with_their_grad_cam_overlays():
    frame = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    verdict = {"evidence": [{"time_s": 1.0, "probability": 0.9, "jpeg": frame, "gradcam_jpeg": frame},
                            {"time_s": 2.0, "probability": 0.7, "jpeg": frame}]}  # fmt: skip
    images, titles = insight.evidence_images(verdict)
    assert len(images) == 3 and images[0].shape == (8, 8, 3)
    assert titles == ["1.0 s: P(fake) 0.90", "Grad-CAM", "2.0 s: P(fake) 0.70"]
    assert insight.evidence_images({}) == ([], [])


def test_an_image_grid_has_a_titled_panel_per_image():
    fig = insight.image_grid([np.zeros((4, 4, 3), np.uint8)] * 3, ["a", "b", "c"], columns=2, title="t")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["a", "b", "c"] and len(fig.axes) == 4


def test_quarantined_inputs_are_listed_per_dataset_in_uri_order(store):
    store.record_dataset({"_id": "ds-1"}, [{"uri": "/s/b.jpg", "content_id": "", "reason": "truncated"},
                                          {"uri": "/s/a.mp4", "content_id": "c", "reason": "too long"}])  # fmt: skip
    store.record_dataset({"_id": "ds-2"}, [{"uri": "/s/z.jpg", "content_id": "", "reason": "truncated"}])
    listed = store.quarantined("ds-1")
    assert [(q["uri"], q["reason"]) for q in listed] == [("/s/a.mp4", "too long"), ("/s/b.jpg", "truncated")]
    assert store.quarantined("ds-3") == []


@pytest.mark.slow
def test_rescoring_stored_media_reproduces_their_verdicts_and_shows_what_other_bands_change(scored_verdicts):
    from pipeline.stages.score import LoadedModel

    # Each first seen in a bucket this process cannot reach (no credentials): the next location is read instead.
    documents = [{**d, "source_uri": "s3://unreachable-bucket/" + d["_id"]} | {"sources": [d["source_uri"]]}
                 for d in scored_verdicts.store.list_verdicts(limit=100)]  # fmt: skip
    bundle = scored_verdicts.bundle
    same = LoadedModel(bundle, ModelRef("mediacheck-detector", "1", "run-untrained"))
    scores = insight.rescore(documents, same, scored_verdicts.settings)
    scored = {d["_id"]: d for d in documents if d["status"] == "scored"}
    assert set(scores["content_id"]) == set(scored) and len(scores) == len(scored) > 0
    for row in scores.itertuples():
        assert row.probability == pytest.approx(scored[row.content_id]["probability"], abs=1e-6)
        assert row.verdict == scored[row.content_id]["verdict"] and row.model == "v1"

    everything_fake = replace(bundle.calibration, real_below=0.0, fake_from=0.0)  # the same model, other bands
    other = LoadedModel(replace(bundle, calibration=everything_fake), ModelRef("mediacheck-detector", "2", "run-x"))
    compared = insight.side_by_side(pd.concat([scores, insight.rescore(documents, other, scored_verdicts.settings)]))
    flips = compared[compared["verdict v1"] != compared["verdict v2"]]
    assert len(flips) > 0
    assert compared["disagree"].tolist() == [True] * len(flips) + [False] * (len(compared) - len(flips))
    assert (flips["verdict v2"].isin(["fake", "uncertain"])).all()
