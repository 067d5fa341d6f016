"""The served model: a Keras model plus its calibration, saved and loaded as one folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.model.calibration import Calibration

MODEL_FILE, META_FILE = "model.keras", "bundle.json"


@dataclass
class ModelBundle:
    model: keras.Model
    calibration: Calibration
    metadata: dict

    @property
    def frame_size(self) -> int:
        return int(self.model.input_shape[1])

    def logits(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        """Raw logits for a stack of 0-255 RGB frames of the model's input size."""
        outputs = [
            np.asarray(self.model.predict_on_batch(frames[i : i + batch_size].astype(np.float32)))
            for i in range(0, len(frames), batch_size)
        ]
        return np.concatenate(outputs).reshape(-1) if outputs else np.zeros(0)

    def probabilities(self, frames: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        return self.calibration.probability(self.logits(frames, batch_size=batch_size))


def save_bundle(folder: Path, model: keras.Model, calibration: Calibration, metadata: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    (folder / META_FILE).write_text(json.dumps({"calibration": calibration.to_dict(), **metadata}, indent=2))
    return folder


def load_bundle(folder: Path) -> ModelBundle:
    meta = json.loads((folder / META_FILE).read_text())
    model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    return ModelBundle(model, Calibration(**meta.pop("calibration")), meta)
