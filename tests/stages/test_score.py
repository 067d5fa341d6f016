"""The score stage feeds the model the pixels training read for the same media."""

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.media.images import decode_image
from pipeline.model.bundle import ModelBundle
from pipeline.model.calibration import Calibration
from pipeline.model.data import frame_dataset
from pipeline.prepare.process import process_items
from pipeline.prepare.sources import SourceItem
from pipeline.settings import PrepareSettings
from pipeline.stages.score import model_frame
from pipeline.synthetic import photo


@pytest.mark.parametrize("policy", ["squash", "letterbox", "center_crop"])
def test_a_scored_image_reaches_the_model_as_the_training_pipeline_read_it(tmp_path, policy):
    source = tmp_path / "camera.png"
    cv2.imwrite(str(source), cv2.cvtColor(np.ascontiguousarray(photo("coffee")[:200, :300]), cv2.COLOR_RGB2BGR))
    settings = PrepareSettings(frame_size=128, resize_policy=policy)
    (result,) = process_items([SourceItem(str(source), 0)], settings, tmp_path / "frames")
    manifest = pd.DataFrame(
        [{"frame_path": result.frames[0].path, "label": 0, "sample_weight": 1.0, "frame_size": 128}]
    )
    trained_on = next(iter(frame_dataset(manifest, batch_size=1, training=False, seed=0)))[0][0].numpy()

    bundle = ModelBundle(tmp_path, Calibration(), {"frame_size": 128, "resize_policy": policy})
    served = model_frame(decode_image(source.read_bytes())[0], bundle)

    assert served.shape == trained_on.shape == (128, 128, 3)
    np.testing.assert_array_equal(served, trained_on)


@pytest.mark.slow
def test_a_bundle_from_before_out_of_distribution_checks_still_scores(scored_verdicts):
    from pipeline.media.sniff import sniff_kind
    from pipeline.stages.score import score_content

    fitted = scored_verdicts.bundle
    older = ModelBundle(fitted.folder, fitted.calibration, {k: v for k, v in fitted.metadata.items() if k != "ood"})
    chart = next(p for p in scored_verdicts.dropped if p.name == "chart.jpg")
    document, outputs = score_content(chart, sniff_kind(chart.read_bytes()), older, scored_verdicts.settings, {})
    assert older.distribution is None and document["ood"] is None and document["ood_score"] is None
    assert document["reason"] != "outside the training distribution" and "embedding" in outputs
    assert document["verdict"] == document["model_verdict"] == older.calibration.verdict(document["probability"])
