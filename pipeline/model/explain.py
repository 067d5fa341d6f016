"""Why a frame scored as it did: Grad-CAM heatmaps from the served model's class activation map.

The served model's head is linear after global average pooling (``train.build_classifier``), so
the gradient of its logit with respect to the last convolutional block's activations ``A`` is
the head's weight ``w`` divided by the number of cells, the same at every cell. Grad-CAM's
channel weights are therefore exactly ``w`` (up to that constant) and its heatmap
``ReLU(sum_k w_k A_k)`` is the model's ``cam`` output less the head's bias: no second pass and
no gradients at scoring time. ``tests/model/test_explain.py`` checks the equality against
TensorFlow's own gradients, and that the hottest region is the one the score depends on.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.media.images import resize_to_square

OVERLAY_ALPHA = 0.45


def grad_cam(cam: np.ndarray, bias: float) -> np.ndarray:
    """Heatmaps scaled to [0, 1], one per frame (``N, h, w``), from the served ``cam`` output."""
    heat = np.maximum(np.asarray(cam, np.float64) - bias, 0.0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0)


def upsampled(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A heatmap over a square frame of ``size`` pixels (each cell covers its share of the frame)."""
    return np.clip(cv2.resize(heatmap.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


def overlay(frame: np.ndarray, heatmap: np.ndarray, *, size: int) -> np.ndarray:
    """The square RGB frame at ``size`` pixels with its heatmap laid over it (red: most evidence of AI)."""
    colours = cv2.applyColorMap(np.uint8(255 * upsampled(heatmap, size)), cv2.COLORMAP_JET)
    blended = (1 - OVERLAY_ALPHA) * resize_to_square(frame, size, "squash") + OVERLAY_ALPHA * colours[..., ::-1]
    return np.clip(blended, 0, 255).astype(np.uint8)
