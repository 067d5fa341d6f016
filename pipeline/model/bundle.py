"""The served model: Keras and ONNX forms of one detector plus its calibration, as one folder.

Serving uses ONNX Runtime when the bundle has a verified ``model.onnx`` (several times faster
on CPU, and no TensorFlow import); the Keras model is loaded only when needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.model.calibration import Calibration
from pipeline.model.onnx_export import OnnxExportError, OnnxSession, export_onnx, keras_logits

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

    @cached_property
    def keras_model(self) -> keras.Model:
        import keras

        import pipeline.model.layers  # noqa: F401  (registers the custom layers a served model may use)

        return keras.models.load_model(self.folder / MODEL_FILE, compile=False)

    @cached_property
    def _onnx(self) -> OnnxSession:
        return OnnxSession(self.folder / ONNX_FILE)

    def logits(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        """Raw logits for a stack of 0-255 RGB frames of the bundle's frame size."""
        predict = self._onnx.run if self.runtime == "onnxruntime" else partial(keras_logits, self.keras_model)
        outputs = [predict(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros(0)

    def probabilities(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        return self.calibration.probability(self.logits(frames, batch_size=batch_size))


def save_bundle(folder: Path, model: keras.Model, calibration: Calibration, metadata: dict, *,
                check_frames: np.ndarray) -> Path:  # fmt: skip
    """Save the Keras model, an ONNX export verified on ``check_frames``, and the metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    try:
        metadata = {**metadata, "onnx_max_abs_diff": export_onnx(model, folder / ONNX_FILE, check_frames=check_frames)}
    except OnnxExportError as error:  # serving falls back to Keras; say so rather than fail training
        log.warning("serving this model with Keras: %s", error)
        metadata = {**metadata, "onnx_error": str(error)}
    (folder / META_FILE).write_text(json.dumps({"calibration": calibration.to_dict(), **metadata}, indent=2))
    return folder


def load_bundle(folder: Path) -> ModelBundle:
    meta = json.loads((folder / META_FILE).read_text())
    return ModelBundle(folder, Calibration(**meta.pop("calibration")), meta)
