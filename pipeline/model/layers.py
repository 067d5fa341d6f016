"""Custom Keras layers saved inside served models (import this module before loading one)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="mediacheck")
class HorizontalMirror(layers.Layer):
    """Mirror images left-right, always (unlike RandomFlip): the second view of test-time flipping."""

    def call(self, images):
        return ops.flip(images, axis=-2)
