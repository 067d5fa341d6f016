"""Export a Keras detector to ONNX for fast CPU serving, and check it matches Keras.

Keras 3's direct ONNX export and tf2onnx's in-memory conversion both turn the backbone's
Normalization statistics into graph inputs; a SavedModel converted by tf2onnx's own
converter does not, so that is the route taken.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

OPSET = 17


class OnnxExportError(RuntimeError):
    """The model could not be converted, or the conversion does not match Keras."""


def export_onnx(model: keras.Model, path: Path, *, check_frames: np.ndarray, tolerance: float = 1e-4) -> float:
    """Write ``model`` as ONNX to ``path``; return the largest output difference on ``check_frames``."""
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as folder:
        saved_model = Path(folder) / "saved_model"
        model.export(str(saved_model), format="tf_saved_model", verbose=False)
        result = subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--output", str(path),
             "--opset", str(OPSET)],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    if result.returncode != 0:
        raise OnnxExportError(f"tf2onnx failed: {result.stderr.strip().splitlines()[-1:]}")
    difference = float(np.max(np.abs(OnnxSession(path).run(check_frames) - keras_logits(model, check_frames))))
    if difference > tolerance:
        path.unlink()
        raise OnnxExportError(f"ONNX output differs from Keras by {difference:.2e} (> {tolerance:.0e})")
    return difference


def keras_logits(model: keras.Model, frames: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(frames.astype(np.float32))).reshape(-1)


class OnnxSession:
    """An ONNX Runtime session over a detector: 0-255 frames in, logits out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, frames: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: frames.astype(np.float32)})[0].reshape(-1)
