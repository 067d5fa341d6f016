"""Two-phase transfer learning: train a head on a frozen backbone, then fine-tune its top blocks.

Follows the keras-io EfficientNet fine-tuning recipe: normalisation inside the model,
BatchNormalization kept in inference mode throughout, a low learning rate in phase 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pandas as pd
from keras import layers

from pipeline.model.backbones import block_prefixes, build_backbone
from pipeline.model.data import frame_dataset
from pipeline.settings import ModelSettings

EpochCallback = Callable[[str, int, dict[str, float]], None]
HEAD, FINE_TUNE = "head", "fine_tune"


@dataclass
class TrainOutcome:
    model: keras.Model
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    unfrozen_blocks: list[str] = field(default_factory=list)


def build_classifier(settings: ModelSettings, *, frame_size: int, augment: bool = True) -> keras.Model:
    """0-255 RGB frames in, one logit out (positive = AI-generated)."""
    inputs = keras.Input((frame_size, frame_size, 3), name="frames")
    x = inputs
    if settings.image_size != frame_size:
        x = layers.Resizing(settings.image_size, settings.image_size, name="resize")(x)
    if augment:
        x = augmentation()(x)
    backbone = build_backbone(settings.backbone, weights=settings.weights, image_size=settings.image_size)
    backbone.trainable = False
    x = backbone(x, training=False)  # BatchNorm stays in inference mode, also when unfrozen
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(settings.dropout, name="head_dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=f"{settings.backbone}_detector")


def augmentation() -> keras.Sequential:
    """Geometric and photometric augmentation; active only while training."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal"),
            layers.RandomRotation(0.03),
            layers.RandomZoom(0.1),
            layers.RandomBrightness(0.1, value_range=(0, 255)),
            layers.RandomContrast(0.1, value_range=(0, 255)),
        ],
        name="augment",
    )


def serving_copy(model: keras.Model, settings: ModelSettings) -> keras.Model:
    """The trained model without its augmentation layers, for saving and export."""
    serving = build_classifier(settings.model_copy(update={"weights": "none"}), frame_size=model.input_shape[1],
                               augment=False)  # fmt: skip
    for layer in serving.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return serving


def backbone_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != "augment")


def unfreeze_top_blocks(model: keras.Model, blocks: int) -> list[str]:
    """Make the top ``blocks`` backbone blocks trainable, except their BatchNorm layers."""
    backbone = backbone_of(model)
    chosen = block_prefixes(backbone)[-blocks:] if blocks else []
    backbone.trainable = bool(chosen)
    for layer in backbone.layers:
        in_block = layer.name.split("_")[0] in chosen
        layer.trainable = in_block and not isinstance(layer, layers.BatchNormalization)
    return chosen


def train_two_phase(
    manifest: pd.DataFrame, settings: ModelSettings, *, workdir: Path, seed: int, on_epoch: EpochCallback | None = None
) -> TrainOutcome:
    """Train on the manifest's ``train`` rows, validating on its ``val`` rows."""
    keras.utils.set_random_seed(seed)
    frame_size = int(manifest["frame_size"].iloc[0])
    train = frame_dataset(
        manifest[manifest["split"] == "train"], batch_size=settings.batch_size, training=True, seed=seed
    )
    val = frame_dataset(manifest[manifest["split"] == "val"], batch_size=settings.batch_size, training=False, seed=seed)
    model = build_classifier(settings, frame_size=frame_size)
    outcome = TrainOutcome(model)
    phases = [(HEAD, settings.head_epochs, settings.head_learning_rate, 0)]
    if settings.fine_tune_epochs and settings.unfreeze_blocks:
        phases.append(
            (FINE_TUNE, settings.fine_tune_epochs, settings.fine_tune_learning_rate, settings.unfreeze_blocks)
        )
    for phase, epochs, learning_rate, blocks in phases:
        if blocks:
            outcome.unfrozen_blocks = unfreeze_top_blocks(model, blocks)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.AUC(from_logits=True, name="auc"),
                keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
            ],
        )
        started = time.perf_counter()
        history = model.fit(
            train,
            validation_data=val,
            epochs=epochs,
            shuffle=False,  # frame_dataset shuffles the whole list; Keras cannot shuffle a tf.data input
            verbose=2,
            callbacks=_callbacks(phase, settings, workdir, on_epoch),
        )
        outcome.seconds[phase] = time.perf_counter() - started
        outcome.history[phase] = {k: [float(v) for v in values] for k, values in history.history.items()}
    return outcome


def _callbacks(phase: str, settings: ModelSettings, workdir: Path, on_epoch: EpochCallback | None) -> list:
    workdir.mkdir(parents=True, exist_ok=True)
    monitor = {"monitor": "val_auc", "mode": "max"}
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(workdir / f"best_{phase}.keras"), save_best_only=True, **monitor),
        keras.callbacks.EarlyStopping(patience=settings.early_stopping_patience, restore_best_weights=True, **monitor),
        keras.callbacks.ReduceLROnPlateau(
            factor=0.3, patience=max(1, settings.early_stopping_patience - 1), min_lr=1e-7, **monitor
        ),
    ]
    if on_epoch:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(phase, epoch, {k: float(v) for k, v in (logs or {}).items()})
            )
        )
    return callbacks
