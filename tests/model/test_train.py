"""Both training phases on tiny data: what is trainable, and that learning happens."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.model.backbones import block_prefixes
from pipeline.model.train import (
    FINE_TUNE,
    HEAD,
    LastEpochWeights,
    backbone_of,
    build_classifier,
    build_loss,
    build_optimizer,
    keep_better_mean,
    learning_rate_schedule,
    train_two_phase,
    training_callbacks,
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


def test_unfreezing_every_block_trains_the_stem_on_raw_pixels():
    model = build_classifier(ModelSettings(backbone="efficientnet_lite0", weights="none", image_size=64), frame_size=64)
    chosen = unfreeze_top_blocks(model, 99)
    backbone = backbone_of(model)
    assert chosen[0] == "stem" and chosen == block_prefixes(backbone)
    assert backbone.get_layer("stem_conv").trainable and not backbone.get_layer("stem_bn").trainable


def test_two_phases_train_and_improve(settings, store, synthetic_source, tmp_path):
    import pandas as pd

    summary = prepare.run(settings, store, str(synthetic_source.root))
    manifest = pd.read_parquet(summary["manifest"])
    seen = []
    outcome = train_two_phase(
        manifest,
        settings.model.model_copy(update={"average_last_epochs": 2}),
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
    mean = outcome.weight_mean  # the last two fine-tune epochs, judged on validation against the best one
    assert mean["epochs"] == min(2, settings.model.fine_tune_epochs) and mean["kept"] in (0.0, 1.0)
    assert mean["mean_val_loss"] > 0 and mean["best_epoch_val_loss"] > 0
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


def _fit_one_epoch(settings: ModelSettings, steps: int) -> tuple[keras.Model, list[np.ndarray]]:
    """A one-weight-matrix model fitted for one epoch of ``steps`` fixed batches; weights after each step."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(steps * 4, 3)).astype("float32"), rng.integers(0, 2, (steps * 4, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=build_optimizer(settings, 0.1, steps_per_epoch=steps), loss="mse")
    iterates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda *_, **__: iterates.append(model.get_weights()[0].copy())
    )
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return model, iterates


def test_weight_averaging_leaves_the_moving_average_of_the_steps_at_epoch_end():
    plain, iterates = _fit_one_epoch(ModelSettings(), steps=4)
    averaged, _ = _fit_one_epoch(ModelSettings(weight_averaging=0.5), steps=4)
    expected = iterates[0]  # the average starts at the first step's weights
    for step_weights in iterates[1:]:
        expected = 0.5 * expected + 0.5 * step_weights
    np.testing.assert_allclose(averaged.get_weights()[0], expected, atol=1e-6)
    np.testing.assert_allclose(plain.get_weights()[0], iterates[-1])
    assert not np.allclose(expected, iterates[-1], atol=1e-3)  # averaging changed the outcome


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_stops_the_logit_at_the_smoothed_target(smoothing):
    """Trained on AI frames only, a bias settles at logit log((1 - s/2) / (s/2)), or keeps growing unsmoothed."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=build_loss(ModelSettings(label_smoothing=smoothing)))
    model.fit(np.zeros((2048, 1), "float32"), np.ones((2048, 1), "float32"), batch_size=4, verbose=0)
    logit = float(model.layers[0].bias.numpy()[0])
    smoothed_optimum = np.log((1 - 0.1 / 2) / (0.1 / 2))
    if smoothing:
        assert logit == pytest.approx(smoothed_optimum, abs=0.05)
    else:
        assert logit > 1.5 * smoothed_optimum


def test_checkpoint_on_validation_loss_restores_the_lowest_loss_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    settings = ModelSettings(checkpoint_metric="val_loss", early_stopping_patience=10)
    weights_by_epoch = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_, **__: weights_by_epoch.append(model.get_weights()))
    # Validation labels are the opposite of training's, so its loss is lowest after the first epoch.
    history = model.fit(
        x, y, validation_data=(x, 1 - y), epochs=4, verbose=0,
        callbacks=[record, *training_callbacks(FINE_TUNE, settings, tmp_path, None, reduce_on_plateau=False)],
    )  # fmt: skip
    best = int(np.argmin(history.history["val_loss"]))
    assert best == 0 and (tmp_path / f"best_{FINE_TUNE}.keras").exists()
    for restored, kept in zip(model.get_weights(), weights_by_epoch[best], strict=True):
        np.testing.assert_array_equal(restored, kept)
    assert not np.array_equal(model.get_weights()[0], weights_by_epoch[-1][0])


def test_last_epoch_weights_keep_only_the_last_epochs_and_average_them():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    by_epoch = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_, **__: by_epoch.append(model.get_weights()))
    last_two = LastEpochWeights(2)
    model.fit(x, x[:, :1] * 2, epochs=4, verbose=0, callbacks=[record, last_two])
    assert len(last_two.snapshots) == 2
    for kept, mean, late, last in zip(last_two.snapshots[0], last_two.mean(), by_epoch[2], by_epoch[3], strict=True):
        np.testing.assert_allclose(kept, late)
        np.testing.assert_allclose(mean, (late + last) / 2, rtol=1e-6)
    assert not np.allclose(by_epoch[2][0], by_epoch[3][0])  # the epochs differ, so the mean is new


@pytest.mark.parametrize("metric", ["val_loss", "val_auc"])
def test_weight_mean_replaces_the_best_epoch_only_when_it_validates_better(metric):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.AUC(from_logits=True, name="auc")])  # fmt: skip
    right = [np.array([[4.0], [0.0]], "float32"), np.zeros(1, "float32")]  # the logit follows the label
    wrong = [np.array([[-4.0], [1.0]], "float32"), np.zeros(1, "float32")]
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)

    model.set_weights(wrong)
    won = keep_better_mean(model, right, val, metric)
    assert won["kept"] == 1.0 and won["mean_val_loss"] < won["best_epoch_val_loss"]
    np.testing.assert_array_equal(model.get_weights()[0], right[0])

    lost = keep_better_mean(model, wrong, val, metric)
    assert lost["kept"] == 0.0 and lost["mean_val_auc"] < lost["best_epoch_val_auc"]
    np.testing.assert_array_equal(model.get_weights()[0], right[0])  # the better weights stay
