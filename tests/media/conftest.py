"""Tiny real media made with the shipped FFmpeg and Pillow."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.media.video import ffmpeg_exe

PATTERN = ("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2")  # 2 s, 10 fps, 64x48, moving
CONTAINERS = {  # file name: FFmpeg output options; each holds PATTERN
    "mpeg-ps.mpg": ("-c:v", "mpeg2video", "-f", "vob"),
    "theora.ogv": ("-c:v", "libtheora"),
    "quicktime.mov": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    "matroska.mkv": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    "vp9.webm": ("-c:v", "libvpx-vp9", "-deadline", "realtime"),
    "mpeg4.avi": ("-c:v", "mpeg4"),
    "mpeg-ts.ts": ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
    "flash.flv": ("-c:v", "flv"),
    "asf.wmv": ("-c:v", "wmv2"),
}
ANIMATED = {"GIF": "gif", "WEBP": "webp", "PNG": "png"}  # Pillow format: suffix
ANIMATION_FRAMES = 10  # 100 ms each: frame i is grey level 20 * i


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True, timeout=60)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 2 s, 10 fps, 64x48 H.264 test pattern."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    ffmpeg(*PATTERN, "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("made")

    def make(name: str, *args: str) -> Path:
        path = folder / name
        ffmpeg(*args, str(path))
        return path

    return make


@pytest.fixture(scope="session")
def containers(tmp_path_factory) -> dict[str, Path]:
    """PATTERN in every container of CONTAINERS, plus a QuickTime file without an ``ftyp`` box.

    Old QuickTime files start straight with their atoms; renaming the ``ftyp`` box ``free``
    (same size, so every offset stays valid) makes one.
    """
    folder = tmp_path_factory.mktemp("containers")
    made = {}
    for name, options in CONTAINERS.items():
        made[name] = folder / name
        ffmpeg(*PATTERN, *options, str(made[name]))
    data = made["quicktime.mov"].read_bytes()
    assert data[4:8] == b"ftyp"
    made["old-quicktime.mov"] = folder / "old-quicktime.mov"
    made["old-quicktime.mov"].write_bytes(data[:4] + b"free" + data[8:])
    return made


def save_animation(path: Path, frames: list[Image.Image], fmt: str, durations: list[int] | int = 100) -> Path:
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


@pytest.fixture(scope="session")
def animations(tmp_path_factory) -> dict[str, Path]:
    """A 1 s, 10-frame, 60x40 animation in each of GIF, WebP and APNG (frame i is grey 20 * i)."""
    folder = tmp_path_factory.mktemp("animations")
    frames = [Image.fromarray(np.full((40, 60, 3), 20 * i, np.uint8)) for i in range(ANIMATION_FRAMES)]
    return {fmt: save_animation(folder / f"anim.{suffix}", frames, fmt) for fmt, suffix in ANIMATED.items()}
