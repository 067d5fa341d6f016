"""The served model: Keras and ONNX forms of one detector, its calibration and a description of
its training data (for out-of-distribution checks), as one folder.

Serving uses ONNX Runtime when the bundle has a verified ``model.onnx`` (several times faster
on CPU, and no TensorFlow import); the Keras model is loaded only when needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.model.calibration import Calibration
from pipeline.model.drift import DriftReference
from pipeline.model.onnx_export import (
    LOGIT,
    SERVED_OUTPUTS,
    OnnxExportError,
    OnnxSession,
    concatenated,
    export_onnx,
    keras_outputs,
)
from pipeline.model.ood import TrainingDistribution

if TYPE_CHECKING:
    import keras

MODEL_FILE, ONNX_FILE, META_FILE = "model.keras", "model.onnx", "bundle.json"
log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    folder: Path
    calibration: Calibration
    metadata: dict

    @property
    def frame_size(self) -> int:
        return int(self.metadata["frame_size"])

    @property
    def runtime(self) -> str:
        return "onnxruntime" if (self.folder / ONNX_FILE).exists() else "keras"

    @property
    def logit_bias(self) -> float:
        """The head's bias: the served class activation map less this is the Grad-CAM heatmap."""
        return float(self.metadata.get("logit_bias", 0.0))

    @cached_property
    def distribution(self) -> TrainingDistribution | None:
        """What the model was trained on; None for a bundle saved before out-of-distribution checks."""
        described = self.metadata.get("ood")
        return TrainingDistribution.load(self.folder, described) if described else None

    @cached_property
    def drift_reference(self) -> DriftReference | None:
        """The training media's statistics that drift checks compare with; None before drift monitoring."""
        return DriftReference.load(self.folder)

    @cached_property
    def keras_model(self) -> keras.Model:
        import keras

        import pipeline.model.layers  # noqa: F401  (registers the custom layers a served model may use)

        return keras.models.load_model(self.folder / MODEL_FILE, compile=False)

    @cached_property
    def _onnx(self) -> OnnxSession:
        return OnnxSession(self.folder / ONNX_FILE)

    def infer(self, frames: np.ndarray, *, batch_size: int = 32, outputs: Sequence[str] = SERVED_OUTPUTS) -> dict:
        """The served outputs (those this model has) for a stack of 0-255 RGB frames of the bundle's size."""
        predict = self._onnx.run if self.runtime == "onnxruntime" else partial(keras_outputs, self.keras_model)
        batches = [predict(frames[i : i + batch_size], outputs) for i in range(0, len(frames), batch_size)]
        return concatenated(batches, outputs)

    def logits(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        """Raw logits for a stack of 0-255 RGB frames of the bundle's frame size."""
        return self.infer(frames, batch_size=batch_size, outputs=(LOGIT,))[LOGIT]

    def probabilities(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        return self.calibration.probability(self.logits(frames, batch_size=batch_size))


def save_bundle(folder: Path, model: keras.Model, calibration: Calibration, metadata: dict, *,
                check_frames: np.ndarray, distribution: TrainingDistribution | None = None,
                drift_reference: DriftReference | None = None) -> Path:  # fmt: skip
    """Save the Keras model, an ONNX export verified on ``check_frames``, the training distribution, the drift
    reference and the metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    metadata = {**metadata, "logit_bias": float(model.get_layer("logit").get_weights()[1][0])}
    if distribution is not None:
        metadata["ood"] = distribution.save(folder)
    if drift_reference is not None:
        drift_reference.save(folder)
    try:
        metadata["onnx_max_abs_diff"] = export_onnx(model, folder / ONNX_FILE, check_frames=check_frames)
    except OnnxExportError as error:  # serving falls back to Keras; say so rather than fail training
        log.warning("serving this model with Keras: %s", error)
        metadata["onnx_error"] = str(error)
    (folder / META_FILE).write_text(json.dumps({"calibration": calibration.to_dict(), **metadata}, indent=2))
    return folder


def load_bundle(folder: Path) -> ModelBundle:
    meta = json.loads((folder / META_FILE).read_text())
    return ModelBundle(folder, Calibration(**meta.pop("calibration")), meta)
