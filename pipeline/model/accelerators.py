"""Where training runs: GPU detection, mixed precision, XLA and multi-GPU distribution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import tensorflow as tf

from pipeline.settings import ModelSettings


@dataclass(frozen=True)
class Accelerator:
    gpus: int
    mixed_precision: bool
    xla: bool
    strategy: tf.distribute.Strategy

    def describe(self) -> dict[str, object]:
        return {
            "gpus": self.gpus,
            "mixed_precision": self.mixed_precision,
            "xla": self.xla,
            "replicas": self.strategy.num_replicas_in_sync,
        }


def detect(settings: ModelSettings) -> Accelerator:
    """Mixed precision and XLA on GPUs (``auto``), MirroredStrategy across several GPUs.

    On CPUs both stay off: bfloat16/float16 compute measured 2.5-3x slower on the 2-core
    development machine.
    """
    gpus = len(tf.config.list_physical_devices("GPU"))

    def wanted(choice: str) -> bool:
        return choice == "on" or (choice == "auto" and gpus > 0)

    strategy = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    return Accelerator(gpus, wanted(settings.mixed_precision), wanted(settings.xla), strategy)


@contextmanager
def training_scope(accelerator: Accelerator) -> Iterator[None]:
    """Build and train inside the strategy, under the precision policy; restore float32 after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if accelerator.mixed_precision else "float32")
    try:
        with accelerator.strategy.scope():
            yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
