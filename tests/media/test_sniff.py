import io
import os
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipeline.media.sniff import sniff_format, sniff_kind, sniff_path_kind
from tests.media.conftest import ANIMATED


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_images_are_recognised_by_content(fmt, tmp_path):
    assert sniff_kind(_image_bytes(fmt)[:32]) == "image"
    assert sniff_format(_image_bytes(fmt)[:32]) == fmt.lower()
    still = tmp_path / "picture.mp4"  # the name says video; the content decides
    still.write_bytes(_image_bytes(fmt))
    assert sniff_path_kind(still) == "image"


def test_real_video_containers(clip, make_clip):
    avi = make_clip("x.avi", "-i", str(clip))
    mkv = make_clip("x.mkv", "-i", str(clip))
    for path, container in ((clip, "iso-bmff"), (avi, "avi"), (mkv, "matroska")):
        assert sniff_kind(path.read_bytes()[:32]) == "video", path
        assert sniff_format(path.read_bytes()[:32]) == container
        assert sniff_path_kind(path) == "video"


def test_containers_without_a_known_signature_are_videos_by_ffmpegs_probe(containers):
    unsigned = {"mpeg-ps.mpg", "theora.ogv", "old-quicktime.mov", "mpeg-ts.ts", "flash.flv", "asf.wmv"}
    for name, path in containers.items():
        assert sniff_path_kind(path) == "video", name
        if name in unsigned:  # the signatures alone do not know these: the probe found them
            assert sniff_kind(path.read_bytes()[:32]) == "unknown", name


@pytest.mark.parametrize("fmt", ANIMATED)
def test_animated_images_are_videos_and_stills_stay_images(fmt, animations, tmp_path):
    assert sniff_path_kind(animations[fmt]) == "video"
    single = tmp_path / f"single.{ANIMATED[fmt]}"
    Image.open(animations[fmt]).save(single, format=fmt)  # the first frame alone
    assert sniff_path_kind(single) == "image"
    # An animated WebP says so in its first bytes; GIF and APNG need the file.
    head = animations[fmt].read_bytes()[:32]
    assert sniff_kind(head) == ("video" if fmt == "WEBP" else "image")


def test_audio_only_files_are_not_media(make_clip, tmp_path):
    cover = tmp_path / "cover.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(cover)
    tone = ("-f", "lavfi", "-i", "sine=duration=1")
    with_cover = ("-i", str(cover), "-map", "0", "-map", "1", "-c:v", "png", "-disposition:v", "attached_pic")
    audio = {
        "tone.m4a": make_clip("tone.m4a", *tone, "-c:a", "aac"),
        "tone.wav": make_clip("tone.wav", *tone),
        "tone.ogg": make_clip("tone.ogg", *tone, "-c:a", "libvorbis"),
        # cover art is listed by FFmpeg as a video stream ("attached pic"): still audio
        "song.mp3": make_clip("song.mp3", *tone, *with_cover, "-c:a", "libmp3lame"),
    }
    assert sniff_kind(audio["tone.m4a"].read_bytes()[:32]) == "unknown"
    for name, path in audio.items():
        assert sniff_path_kind(path) == "unknown", name


def test_text_sidecars_and_junk_are_not_media(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("zeros.txt", "0" * 1_000_000)
    files = {
        "labels.csv": b"uri,label\na.jpg,real\nb.mp4,fake\n",
        "manifest.json": b'{"items": []}',
        "notes.txt": b"plain notes\n",
        "release.nfo": b"text FFmpeg would render as ANSI art (its tty demuxer)\n",
        "ansi.ans": b"\x1b[31mred text\x1b[0m\n",
        "zip-bomb.mp4": archive.getvalue(),
        "random.mp4": np.random.default_rng(0).bytes(4096),
        "empty.mp4": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert sniff_path_kind(tmp_path / name) == "unknown", name
    assert sniff_kind(b"just some text renamed to .mp4") == "unknown"
    assert sniff_kind(b"") == "unknown"


def test_a_fifo_is_not_waited_on_and_a_missing_file_raises(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    found = []
    reader = threading.Thread(target=lambda: found.append(sniff_path_kind(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert found == ["unknown"]  # an opened FIFO would block forever: no writer ever comes
    with pytest.raises(FileNotFoundError):
        sniff_path_kind(tmp_path / "gone.mp4")


def test_the_probe_is_bounded_by_its_timeout(containers):
    assert sniff_path_kind(containers["mpeg-ps.mpg"], timeout_s=1e-4) == "unknown"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("drawing.jpg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        ("page.png", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"),
        ("icon.jpg", b'/* XPM */\nstatic char *x[] = {"1 1 1 1", "a c #000000", "a"};\n'),
    ],
)
def test_pictures_ffmpeg_reads_by_extension_without_an_image_signature_are_not_media(name, content, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    assert sniff_path_kind(path) == "unknown"
