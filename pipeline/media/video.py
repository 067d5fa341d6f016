"""Probe videos and extract uniformly spaced RGB frames with FFmpeg (ffmpeg-python).

The FFmpeg binary is the static build shipped in the imageio-ffmpeg wheel; it has no
ffprobe, so metadata comes from parsing ``ffmpeg -i``. FFmpeg always runs as an argument
list (no shell) under a timeout.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import ffmpeg
import imageio_ffmpeg
import numpy as np

from pipeline.media.images import MediaError

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #\S+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int  # as displayed, after rotation metadata is applied
    height: int
    rotation: int


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    rgb: np.ndarray


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: str, *, timeout_s: float) -> VideoInfo:
    """Read duration, frame rate, displayed size and rotation of a video file."""
    try:
        result = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg probe timed out after {timeout_s:.0f} s") from None
    text = result.stderr.decode("utf-8", "replace")
    if "Invalid data found" in text or "moov atom not found" in text:
        raise MediaError("corrupt or truncated video container")
    stream = _VIDEO_STREAM.search(text)
    if stream is None:
        raise MediaError("no video stream (audio-only or not a video)")
    duration = _DURATION.search(text)
    stream_line = text[stream.start() : text.find("\n", stream.start())]
    fps = _FPS.search(stream_line)
    rotation = _ROTATION.search(text)
    width, height = int(stream.group(1)), int(stream.group(2))
    degrees = int(round(float(rotation.group(1)))) % 360 if rotation else 0
    if degrees in (90, 270):
        width, height = height, width
    seconds = 0.0
    if duration:
        hours, minutes, secs = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(secs)
    return VideoInfo(seconds, float(fps.group(1)) if fps else 0.0, width, height, degrees)


def extract_uniform_frames(path: str, count: int, *, timeout_s: float) -> tuple[VideoInfo, list[Frame]]:
    """Decode ``count`` frames spread uniformly over the video (fewer for very short clips).

    Uses FFmpeg's ``fps`` filter, which selects by presentation time and so stays uniform
    in time for variable-frame-rate input; FFmpeg applies rotation metadata itself.
    """
    info = probe(path, timeout_s=timeout_s)
    if info.duration_s <= 0:
        raise MediaError("video has no duration (not decodable)")
    available = max(1, int(info.duration_s * info.fps)) if info.fps else count
    count = min(count, available)
    command = (
        ffmpeg.input(path)
        .filter("fps", fps=f"{count}/{info.duration_s:.6f}")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=count)
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .compile(cmd=ffmpeg_exe())
    )
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"frame extraction timed out after {timeout_s:.0f} s") from None
    frame_bytes = info.width * info.height * 3
    decoded = len(result.stdout) // frame_bytes
    if decoded == 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise MediaError(f"no decodable video frames ({reason[0]})")
    pixels = np.frombuffer(result.stdout[: decoded * frame_bytes], np.uint8).reshape(
        decoded, info.height, info.width, 3
    )
    step = info.duration_s / count
    return info, [Frame(i, round(i * step, 3), pixels[i]) for i in range(decoded)]
