"""Input statistics of one media item: what it is, how big, how encoded.

Recorded for every training item (the model's input profile, see ``pipeline.model.ood``) and
measured again on every scored item, so the two can be compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.media.video import VideoInfo


@dataclass(frozen=True)
class MediaStats:
    kind: str  # "image" or "video"
    width: int
    height: int
    codec: str  # the image format (jpeg, png, ...) or the video stream's codec (h264, mpeg4, ...)
    fps: float = 0.0
    duration_s: float = 0.0
    bits_per_pixel: float = 0.0  # compression: encoded bits per pixel (per frame for videos)

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    def to_dict(self) -> dict:
        return asdict(self)


def image_stats(codec: str, width: int, height: int, size_bytes: int) -> MediaStats:
    return MediaStats("image", width, height, codec, bits_per_pixel=_per_pixel(8 * size_bytes, width * height))


def video_stats(info: VideoInfo) -> MediaStats:
    bits_per_pixel = _per_pixel(1000 * info.bitrate_kbps, info.width * info.height * info.fps)
    return MediaStats("video", info.width, info.height, info.codec, info.fps, info.duration_s, bits_per_pixel)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as JPEG and FFmpeg's grey conversion use


def brightness(frames: list[np.ndarray]) -> float | None:
    """Mean luma of decoded RGB frames, 0 (black) to 1 (white), on every 4th pixel each way (plenty for a mean)."""
    if not frames:
        return None
    return round(float(np.mean([np.mean(frame[::4, ::4] @ _LUMA) for frame in frames])) / 255, 4)


def _per_pixel(bits: float, pixels: float) -> float:
    return round(bits / pixels, 4) if pixels > 0 else 0.0
