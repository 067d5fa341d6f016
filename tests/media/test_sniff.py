import io

import numpy as np
import pytest
from PIL import Image

from pipeline.media.sniff import sniff_format, sniff_kind


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_images_are_recognised_by_content(fmt):
    assert sniff_kind(_image_bytes(fmt)[:32]) == "image"
    assert sniff_format(_image_bytes(fmt)[:32]) == fmt.lower()


def test_real_video_containers(clip, make_clip):
    avi = make_clip("x.avi", "-i", str(clip))
    mkv = make_clip("x.mkv", "-i", str(clip))
    for path, container in ((clip, "iso-bmff"), (avi, "avi"), (mkv, "matroska")):
        assert sniff_kind(path.read_bytes()[:32]) == "video", path
        assert sniff_format(path.read_bytes()[:32]) == container


def test_text_and_audio_only_are_not_media(make_clip):
    audio = make_clip("tone.m4a", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac")
    assert sniff_kind(audio.read_bytes()[:32]) == "unknown"
    assert sniff_kind(b"just some text renamed to .mp4") == "unknown"
    assert sniff_kind(b"") == "unknown"
