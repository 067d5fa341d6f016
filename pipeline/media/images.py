"""Decode images to RGB and resize them to square frames by a named policy.

Every frame the pipeline stores or scores, from images and from video, goes through
:func:`resize_to_square` and :func:`encode_jpeg`, so both classes share one path and a
model cannot learn file format or size instead of content.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

from pipeline.settings import ResizePolicy

MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused as decompression bombs
JPEG_QUALITY = 95
_EXIF_ORIENTATION = 0x0112
_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended and progressive Huffman frames
_REFUSED_MARKERS = frozenset({0xE1, 0xE2, 0xEE}) | frozenset(range(0xC3, 0xD0)) - {0xC4, 0xCC}
_START_OF_SCAN = 0xDA


class MediaError(ValueError):
    """A media file cannot be used; the message is the quarantine reason."""


def decode_image(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Return an RGB uint8 array and the normalisation steps applied (for the record)."""
    if not data:
        raise MediaError("empty file (0 bytes)")
    if short := _short_jpeg_scan(data):
        raise MediaError(short)
    if is_plain_jpeg(data):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is not None:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), []
    steps: list[str] = []
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never padded with grey
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"image too large ({image.width}x{image.height}): possible decompression bomb")
            if getattr(image, "is_animated", False):
                raise MediaError(
                    f"animated image ({image.n_frames} frames) given to the still-image decoder: classify files "
                    "with sniff_path_kind, which makes animations videos for extract_frames"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MediaError(f"decompression bomb refused: {error}") from None
    except MediaError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt data
        raise MediaError(f"undecodable image: {error}") from None
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        steps.append("exif_rotated")
        image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        steps.append(f"converted_{image.mode}_to_RGB")
        image = _to_rgb(image)
    return np.asarray(image, dtype=np.uint8), steps


def is_plain_jpeg(data: bytes) -> bool:
    """Whether OpenCV may decode ``data`` in place of Pillow, with the same pixels and no steps.

    That is a complete (end marker last) 8-bit, 3-component, Huffman-coded JPEG under the size
    limit, without the markers that make Pillow rotate, convert or refuse it: APP1 (EXIF),
    APP2 (ICC, multi-picture) and APP14 (Adobe colour transform). Pillow's decode plus its
    EXIF and mode checks cost several times OpenCV's on small images; anything else takes
    the Pillow path.
    """
    if not (data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")):
        return False
    for marker, position in _jpeg_segments(data):
        if marker in _REFUSED_MARKERS or marker == _START_OF_SCAN:
            return False
        if marker in _FRAME_MARKERS:
            if position + 10 > len(data):
                return False
            precision, components = data[position + 4], data[position + 9]
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return precision == 8 and components == 3 and 0 < width * height <= MAX_IMAGE_PIXELS
    return False


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset) of each marker segment of a JPEG, from the start up to its first scan."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        yield marker, position
        if marker == _START_OF_SCAN:
            return
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")


def _short_jpeg_scan(data: bytes) -> str | None:
    """Why a Huffman-coded JPEG is too short for the size it declares, or None.

    Every block of the first scan takes at least one bit of Huffman code, so a file needs at
    least one byte per 8 MCUs after its first scan header. Decoders pad what is missing with
    grey and report success, so a few hundred bytes claiming 8000x8000 would otherwise decode.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    frame = None
    for marker, position in _jpeg_segments(data):
        if marker in _FRAME_MARKERS:
            frame = position
        elif marker == _START_OF_SCAN and frame is not None:
            height = int.from_bytes(data[frame + 5 : frame + 7], "big")
            width = int.from_bytes(data[frame + 7 : frame + 9], "big")
            factors = data[frame + 11 : frame + 10 + 3 * data[frame + 9] : 3]  # (H << 4 | V) per component
            h_max, v_max = max((f >> 4 for f in factors), default=0), max((f & 15 for f in factors), default=0)
            if not (width and height and h_max and v_max):
                return None  # malformed or height defined later (DNL): left to the decoder
            mcus = math.ceil(width / (8 * h_max)) * math.ceil(height / (8 * v_max))
            scan_bytes = len(data) - (position + 2 + int.from_bytes(data[position + 2 : position + 4], "big"))
            if scan_bytes * 8 < mcus:
                return (
                    f"truncated or corrupt JPEG: {width}x{height} needs at least {math.ceil(mcus / 8)} bytes "
                    f"of image data, the file has {max(scan_bytes, 0)}"
                )
            return None
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # alpha composited on white
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def resize_to_square(image: np.ndarray, size: int, policy: ResizePolicy) -> np.ndarray:
    """Resize an RGB image to ``size`` x ``size`` by ``squash``, ``letterbox`` or ``center_crop``."""
    height, width = image.shape[:2]
    if policy == "squash" or height == width:  # a square image comes out the same under every policy
        return _resize(image, size, size)
    if policy == "letterbox":
        scale = size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = _resize(image, new_w, new_h)
        return canvas
    if policy == "center_crop":
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        resized = _resize(image, new_w, new_h)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return resized[top : top + size, left : left + size]
    raise ValueError(f"unknown resize policy {policy!r}")


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def encode_jpeg(image: np.ndarray, *, channels: Literal["RGB", "BGR"] = "RGB") -> bytes:
    """Encode a frame the one way every stored frame is encoded (``channels`` names its colour order)."""
    bgr = image if channels == "BGR" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise MediaError("JPEG encoding failed")
    return buffer.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode a stored frame back to RGB."""
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def as_stored(frame: np.ndarray) -> np.ndarray:
    """``frame`` with the loss of its stored JPEG, the pixels training reads back from disk.

    Scoring feeds the model these pixels rather than the cleaner resized frame: a model trained
    on stored frames shifted its scores on frames that never went through the encoder.
    """
    return decode_jpeg(encode_jpeg(frame))
