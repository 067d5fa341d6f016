"""Tiny real media made with the shipped FFmpeg and Pillow."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.media.video import ffmpeg_exe


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True, timeout=60)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 2 s, 10 fps, 64x48 H.264 test pattern."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2", "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("made")

    def make(name: str, *args: str) -> Path:
        path = folder / name
        ffmpeg(*args, str(path))
        return path

    return make
