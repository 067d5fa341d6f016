"""Two-phase transfer learning: train a head on a frozen backbone, then fine-tune its top blocks.

Follows the keras-io EfficientNet fine-tuning recipe: normalisation inside the model,
BatchNormalization kept in inference mode throughout, a low learning rate in phase 2.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from keras import layers

from pipeline.model.accelerators import detect, training_scope
from pipeline.model.backbones import block_prefixes, build_backbone
from pipeline.model.data import frame_dataset
from pipeline.model.layers import HorizontalMirror
from pipeline.model.onnx_export import SERVED_OUTPUTS
from pipeline.settings import ModelSettings

EpochCallback = Callable[[str, int, dict[str, float]], None]
HEAD, FINE_TUNE = "head", "fine_tune"


@dataclass
class TrainOutcome:
    model: keras.Model
    history: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    unfrozen_blocks: list[str] = field(default_factory=list)
    accelerator: dict[str, object] = field(default_factory=dict)
    weight_mean: dict[str, float] = field(default_factory=dict)


def build_classifier(
    settings: ModelSettings, *, frame_size: int, augment: bool = True, serving: bool = False
) -> keras.Model:
    """0-255 RGB frames in, one logit out (positive = AI-generated).

    ``augment`` adds the layers of ``settings.augmentation``; they act only while training.
    ``serving`` builds the served form instead, with three named outputs per frame: the logit;
    the pooled backbone features it is computed from (the embedding that the out-of-distribution
    check compares with the training data's); and the class activation map, the logit's own layer
    applied at every cell of the last convolutional block. The head is linear after pooling, so
    the logit is the mean of that map and its positive part is the head's exact Grad-CAM.
    With ``settings.test_time_flip`` each output is the mean over the frame and its mirror image.
    """
    inputs = keras.Input((frame_size, frame_size, 3), name="frames")
    x = inputs
    if settings.image_size != frame_size:
        x = layers.Resizing(settings.image_size, settings.image_size, name="resize")(x)
    if augment and not serving and settings.augmentation != "none":
        x = augmentation(settings.augmentation)(x)
    backbone = build_backbone(settings.backbone, weights=settings.weights, image_size=settings.image_size)
    backbone.trainable = False
    pool = layers.GlobalAveragePooling2D(name="pool")
    dropout = layers.Dropout(settings.dropout, name="head_dropout")
    logit = layers.Dense(1, name="logit", dtype="float32")  # float32 logits under mixed precision

    def score(images) -> list:
        features = backbone(images, training=False)  # BatchNorm stays in inference mode
        embedding = pool(features)
        return [logit(dropout(embedding)), embedding, logit(features)]

    if not serving:
        return keras.Model(inputs, score(x)[0], name=f"{settings.backbone}_detector")
    outputs = score(x)
    if settings.test_time_flip:
        mirror_logit, mirror_embedding, mirror_cam = score(HorizontalMirror()(x))
        mirrored = [mirror_logit, mirror_embedding, HorizontalMirror(name="cam_unmirror")(mirror_cam)]
        outputs = [
            layers.Average(name=f"mirror_average_{name}", dtype="float32")([own, other])
            for name, own, other in zip(SERVED_OUTPUTS, outputs, mirrored, strict=True)
        ]
    return keras.Model(inputs, dict(zip(SERVED_OUTPUTS, outputs, strict=True)), name=f"{settings.backbone}_detector")


def augmentation(kind: str = "robust") -> keras.Sequential:
    """In-model augmentation, active only while training.

    ``light`` avoids resampling (no rotation or zoom), which matters on tiny images whose
    pixel-level statistics are the evidence.
    """
    geometric = [layers.RandomRotation(0.03), layers.RandomZoom(0.1)] if kind == "robust" else []
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal"),
            *geometric,
            layers.RandomBrightness(0.1, value_range=(0, 255)),
            layers.RandomContrast(0.1, value_range=(0, 255)),
        ],
        name="augment",
    )


def serving_copy(model: keras.Model, settings: ModelSettings, *, frame_size: int | None = None) -> keras.Model:
    """The served form (see :func:`build_classifier`) of a trained model, taking ``frame_size`` frames."""
    serving = build_classifier(
        settings.model_copy(update={"weights": "none"}), frame_size=frame_size or model.input_shape[1], serving=True
    )
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
    """Train on the manifest's ``train`` rows, validating on its ``val`` rows.

    Training runs on frames already resized to the backbone's size (cacheable in memory);
    the returned model is the serving copy, which takes stored frames and resizes them itself.
    """
    keras.utils.set_random_seed(seed)
    size = settings.image_size
    train_rows, val_rows = (manifest[manifest["split"] == split] for split in ("train", "val"))
    train = frame_dataset(
        train_rows, batch_size=settings.batch_size, training=True, seed=seed, image_size=size,
        robust=settings.augmentation == "robust",
    )  # fmt: skip
    val = frame_dataset(val_rows, batch_size=settings.batch_size, training=False, seed=seed, image_size=size)
    accelerator = detect(settings)
    with training_scope(accelerator):
        model = build_classifier(settings, frame_size=size)
        outcome = TrainOutcome(model, accelerator=accelerator.describe())
        phases = [(HEAD, settings.head_epochs, settings.head_learning_rate, 0)]
        if settings.fine_tune_epochs and settings.unfreeze_blocks:
            phases.append(
                (FINE_TUNE, settings.fine_tune_epochs, settings.fine_tune_learning_rate, settings.unfreeze_blocks)
            )
        for phase, epochs, learning_rate, blocks in phases:
            if blocks:
                outcome.unfrozen_blocks = unfreeze_top_blocks(model, blocks)
            steps_per_epoch = math.ceil(len(train_rows) / settings.batch_size)
            schedule = learning_rate_schedule(phase, settings, learning_rate, steps=epochs * steps_per_epoch)
            model.compile(
                optimizer=build_optimizer(settings, schedule, steps_per_epoch=steps_per_epoch),
                loss=build_loss(settings),
                metrics=[
                    keras.metrics.AUC(from_logits=True, name="auc"),
                    keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
                ],
                jit_compile=accelerator.xla,
            )
            callbacks = training_callbacks(
                phase, settings, workdir, on_epoch, reduce_on_plateau=isinstance(schedule, float)
            )
            last_epochs = LastEpochWeights(settings.average_last_epochs if phase == FINE_TUNE else 0)
            started = time.perf_counter()
            history = model.fit(
                train,
                validation_data=val,
                epochs=epochs,
                shuffle=False,  # frame_dataset shuffles the whole list; Keras cannot shuffle a tf.data input
                verbose=2,
                callbacks=[*callbacks, last_epochs],
            )
            if last_epochs.snapshots:
                outcome.weight_mean = {
                    "epochs": len(last_epochs.snapshots),
                    **keep_better_mean(model, last_epochs.mean(), val, settings.checkpoint_metric),
                }
            outcome.seconds[phase] = time.perf_counter() - started
            outcome.history[phase] = {k: [float(v) for v in values] for k, values in history.history.items()}
    outcome.model = serving_copy(model, settings, frame_size=int(manifest["frame_size"].iloc[0]))
    return outcome


class LastEpochWeights(keras.callbacks.Callback):
    """Keeps the trainable weights from the end of each of the last ``epochs`` epochs (none for 0)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.snapshots: deque[list[np.ndarray]] = deque(maxlen=epochs)

    def on_epoch_end(self, epoch, logs=None):
        if self.snapshots.maxlen:
            self.snapshots.append([np.array(v) for v in self.model.trainable_weights])

    def mean(self) -> list[np.ndarray]:
        return [np.mean(values, axis=0) for values in zip(*self.snapshots, strict=True)]


def keep_better_mean(model: keras.Model, mean: list[np.ndarray], val, metric: str) -> dict[str, float]:
    """Swap ``mean`` into the model's trainable weights if it scores better on ``val`` by ``metric``.

    Late epochs of one run lie in one basin, so their mean usually beats each of them (as in
    stochastic weight averaging); BatchNorm statistics stay frozen while fine-tuning, so the
    mean needs no recalibration pass. Returns both validation scores and whether the mean won.
    """
    key, lower_is_better = metric.removeprefix("val_"), metric == "val_loss"
    best = [np.array(v) for v in model.trainable_weights]
    best_scores = model.evaluate(val, verbose=0, return_dict=True)
    _assign(model, mean)
    mean_scores = model.evaluate(val, verbose=0, return_dict=True)
    kept = mean_scores[key] < best_scores[key] if lower_is_better else mean_scores[key] > best_scores[key]
    if not kept:
        _assign(model, best)
    return {
        **{f"best_epoch_val_{k}": float(v) for k, v in best_scores.items()},
        **{f"mean_val_{k}": float(v) for k, v in mean_scores.items()},
        "kept": float(kept),
    }


def _assign(model: keras.Model, weights: list[np.ndarray]) -> None:
    for variable, value in zip(model.trainable_weights, weights, strict=True):
        variable.assign(value)


def learning_rate_schedule(
    phase: str, settings: ModelSettings, learning_rate: float, *, steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant rate (cut on plateaus by a callback), or cosine decay to zero over phase 2."""
    if phase == FINE_TUNE and settings.fine_tune_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    return learning_rate


def build_loss(settings: ModelSettings) -> keras.losses.Loss:
    """Binary cross-entropy on logits, with ``settings.label_smoothing`` applied to the targets."""
    return keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=settings.label_smoothing)


def build_optimizer(
    settings: ModelSettings,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    steps_per_epoch: int,
) -> keras.optimizers.Optimizer:
    """Adam, optionally keeping an exponential moving average of the weights.

    The average overwrites the weights on each epoch's last step, before validation runs, so
    the checkpoint, early stopping and the served model all judge and keep averaged weights.
    """
    if not settings.weight_averaging:
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.Adam(
        learning_rate,
        use_ema=True,
        ema_momentum=settings.weight_averaging,
        ema_overwrite_frequency=steps_per_epoch,
    )


def training_callbacks(
    phase: str, settings: ModelSettings, workdir: Path, on_epoch: EpochCallback | None, *, reduce_on_plateau: bool
) -> list:
    workdir.mkdir(parents=True, exist_ok=True)
    monitor = {
        "monitor": settings.checkpoint_metric,
        "mode": "min" if settings.checkpoint_metric == "val_loss" else "max",
    }
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(workdir / f"best_{phase}.keras"), save_best_only=True, **monitor),
        keras.callbacks.EarlyStopping(patience=settings.early_stopping_patience, restore_best_weights=True, **monitor),
    ]
    if reduce_on_plateau:  # a schedule already owns the learning rate otherwise
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                factor=0.3, patience=max(1, settings.early_stopping_patience - 1), min_lr=1e-7, **monitor
            )
        )
    if on_epoch:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(phase, epoch, {k: float(v) for k, v in (logs or {}).items()})
            )
        )
    return callbacks
