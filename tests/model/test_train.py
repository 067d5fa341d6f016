"""Both training phases on tiny data: what is trainable, and that learning happens."""

import keras
import pytest

from pipeline.model.backbones import block_prefixes
from pipeline.model.train import (
    FINE_TUNE,
    HEAD,
    backbone_of,
    build_classifier,
    learning_rate_schedule,
    train_two_phase,
    unfreeze_top_blocks,
)
from pipeline.settings import ModelSettings
from pipeline.stages import prepare

pytestmark = pytest.mark.slow


def test_unfreezing_takes_whole_top_blocks_and_keeps_batchnorm_frozen():
    model = build_classifier(ModelSettings(backbone="efficientnet_lite0", weights="none", image_size=64), frame_size=64)
    chosen = unfreeze_top_blocks(model, 2)
    backbone = backbone_of(model)
    assert chosen == block_prefixes(backbone)[-2:] == ["block7a", "top"]
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable and all(name.split("_")[0] in chosen for name in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in backbone.layers)


def test_two_phases_train_and_improve(settings, store, synthetic_source, tmp_path):
    import pandas as pd

    summary = prepare.run(settings, store, str(synthetic_source.root))
    manifest = pd.read_parquet(summary["manifest"])
    seen = []
    outcome = train_two_phase(
        manifest,
        settings.model,
        workdir=tmp_path,
        seed=0,
        on_epoch=lambda phase, epoch, logs: seen.append((phase, epoch, logs["loss"])),
    )
    assert [p for p, _, _ in seen] == [HEAD] * settings.model.head_epochs + [
        FINE_TUNE
    ] * settings.model.fine_tune_epochs
    assert set(outcome.history) == {HEAD, FINE_TUNE} and outcome.unfrozen_blocks == ["top"]
    losses = [loss for _, _, loss in seen]
    assert min(losses[1:]) < losses[0]
    assert (tmp_path / "best_head.keras").exists()
    served = outcome.model  # the serving copy: stored frames in, resized inside, no augmentation
    assert served.input_shape[1:] == (128, 128, 3) and "augment" not in {layer.name for layer in served.layers}


def test_cosine_schedule_decays_phase_two_to_zero_and_leaves_phase_one_constant():
    settings = ModelSettings(fine_tune_schedule="cosine")
    schedule = learning_rate_schedule(FINE_TUNE, settings, 3e-4, steps=100)
    assert float(schedule(0)) == pytest.approx(3e-4) and float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(50)) == pytest.approx(1.5e-4, rel=1e-3)
    assert learning_rate_schedule(HEAD, settings, 1e-3, steps=100) == 1e-3
    assert learning_rate_schedule(FINE_TUNE, ModelSettings(), 1e-4, steps=100) == 1e-4


@pytest.mark.parametrize("kind", ["robust", "light", "none"])
def test_augmentation_settings_choose_the_layers(kind):
    model = build_classifier(ModelSettings(backbone="efficientnet_lite0", weights="none", image_size=32,
                                           augmentation=kind), frame_size=32)  # fmt: skip
    names = {layer.name for layer in model.layers}
    if kind == "none":
        assert "augment" not in names
    else:
        layers = {type(layer).__name__ for layer in model.get_layer("augment").layers}
        assert ("RandomZoom" in layers) == (kind == "robust") and "RandomFlip" in layers
