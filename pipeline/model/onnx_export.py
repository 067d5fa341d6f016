"""Export a Keras detector to ONNX for fast CPU serving, and check it matches Keras.

Keras 3's direct ONNX export and tf2onnx's in-memory conversion both turn the backbone's
Normalization statistics into graph inputs; a SavedModel converted by tf2onnx's own
converter does not, so that is the route taken.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

OPSET = 17
# What a served model returns for each frame: its logit, the pooled features the logit is computed
# from (compared with the training data's), and its class activation map (see train.build_classifier).
LOGIT, EMBEDDING, CAM = "logit", "embedding", "cam"
SERVED_OUTPUTS = (LOGIT, EMBEDDING, CAM)


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
    expected = keras_outputs(model, check_frames)
    served = OnnxSession(path).run(check_frames, tuple(expected))
    difference = max(float(np.max(np.abs(served[name] - expected[name]))) for name in expected)
    if difference > tolerance:
        path.unlink()
        raise OnnxExportError(f"ONNX output differs from Keras by {difference:.2e} (> {tolerance:.0e})")
    return difference


def keras_outputs(
    model: keras.Model, frames: np.ndarray, names: Sequence[str] = SERVED_OUTPUTS
) -> dict[str, np.ndarray]:
    """The named outputs of a served Keras model (a training model has only its logit)."""
    outputs = model.predict_on_batch(frames.astype(np.float32))
    if not isinstance(outputs, dict):
        outputs = {LOGIT: outputs}
    return {name: _shaped(name, np.asarray(outputs[name])) for name in names if name in outputs}


def keras_logits(model: keras.Model, frames: np.ndarray) -> np.ndarray:
    return keras_outputs(model, frames, (LOGIT,))[LOGIT]


class OnnxSession:
    """An ONNX Runtime session over a detector: 0-255 frames in, named outputs out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        graph_names = [output.name for output in self.session.get_outputs()]
        # A model exported before outputs were named has one output: its logit.
        self.outputs = {LOGIT: graph_names[0]} if len(graph_names) == 1 else {name: name for name in graph_names}

    def run(self, frames: np.ndarray, names: Sequence[str] = SERVED_OUTPUTS) -> dict[str, np.ndarray]:
        wanted = [name for name in names if name in self.outputs]
        values = self.session.run([self.outputs[name] for name in wanted], {self.input_name: frames.astype(np.float32)})
        return {name: _shaped(name, value) for name, value in zip(wanted, values, strict=True)}


def concatenated(batches: list[dict[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-batch outputs joined into one array per output (empty arrays when there was no batch)."""
    if not batches:
        return {name: np.zeros(0) for name in names}
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def _shaped(name: str, value: np.ndarray) -> np.ndarray:
    """One logit per frame, one map per frame; embeddings as they are."""
    if name == LOGIT:
        return value.reshape(-1)
    return value[..., 0] if name == CAM else value
