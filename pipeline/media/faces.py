"""Face crops with the frontal-face detector that ships with OpenCV (Haar cascade).

Face-swap detectors look at the face, where the manipulation is; a whole 16:9 frame shrunk to
256 px leaves the face a few dozen pixels wide. Frames without a detectable face stay whole.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

DETECT_WIDTH = 480  # detection runs on a copy this wide: fast, and faces stay well above min size


@cache
def _detector() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def largest_face(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the largest frontal face in full-frame pixels, or None."""
    height, width = rgb.shape[:2]
    scale = min(1.0, DETECT_WIDTH / width)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    min_side = max(24, min(gray.shape) // 12)
    faces = _detector().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return round(x / scale), round(y / scale), round(w / scale), round(h / scale)


def face_region(rgb: np.ndarray, *, margin: float = 0.3) -> np.ndarray:
    """A square crop around the largest face, ``margin`` of its size added on each side.

    Returns the frame itself when no face is found, so every frame still yields an input.
    """
    face = largest_face(rgb)
    if face is None:
        return rgb
    x, y, w, h = face
    side = min(round(max(w, h) * (1 + 2 * margin)), *rgb.shape[:2])
    centre_x, centre_y = x + w // 2, y + h // 2
    left = int(np.clip(centre_x - side // 2, 0, rgb.shape[1] - side))
    top = int(np.clip(centre_y - side // 2, 0, rgb.shape[0] - side))
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def frame_region(rgb: np.ndarray, crop: str) -> np.ndarray:
    """The part of a frame the model sees: the whole frame (``full``) or the face (``face``)."""
    return face_region(rgb) if crop == "face" else rgb
