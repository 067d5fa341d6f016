"""Detect media kind and format from content, never from the file extension.

Known images and the common video containers are recognised by their first bytes
(:func:`sniff_kind`). A file is classified in full by :func:`sniff_path_kind`: animated
GIF/PNG/WebP count as videos, and content the signatures do not know is probed with the
bundled FFmpeg, so every container and codec it decodes (MPEG-PS, Ogg, old QuickTime,
MPEG-TS, FLV, ASF, ...) is a video.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import warnings
from functools import lru_cache
from typing import Literal

import imageio_ffmpeg
from PIL import Image

from pipeline.media.images import MAX_IMAGE_PIXELS, MediaError

MediaKind = Literal["image", "video", "unknown"]

_SIGNATURES = (  # (prefix, format) for containers identified by their first bytes
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x1a\x45\xdf\xa3", "matroska"),  # Matroska / WebM
)
_ISO_IMAGE_BRANDS = {b"heic": "heic", b"heix": "heic", b"mif1": "heif", b"avif": "avif"}
_ISO_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ")
_VIDEO_FORMATS = frozenset({"matroska", "avi", "iso-bmff"})
_ANIMATABLE = frozenset({"gif", "png", "webp"})  # formats whose files may hold an animation
_WEBP_ANIMATION_FLAG = 0x02  # in the VP8X chunk's flags byte
SNIFF_BYTES = 32
PROBE_TIMEOUT_S = 30.0

_INPUT_FORMAT = re.compile(r"^Input #0, (.+?), from '", re.MULTILINE)
_STILL_DEMUXERS = re.compile(r"^(image2|\w+_pipe)$")  # FFmpeg's readers of single pictures
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})  # text files FFmpeg renders as "video"


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary shipped with imageio-ffmpeg (it has no ffprobe)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def sniff_format(head: bytes) -> str:
    """The container format of a file from its first bytes (``jpeg``, ``png``, ``iso-bmff``, ...), or ``unknown``."""
    for prefix, name in _SIGNATURES:
        if head.startswith(prefix):
            return name
    if head[:4] == b"RIFF":
        return {b"WEBP": "webp", b"AVI ": "avi"}.get(head[8:12], "unknown")
    if head[4:8] == b"ftyp":  # ISO base media: mp4, mov, m4v, 3gp, heic/avif
        brand = head[8:12]
        if brand in _ISO_AUDIO_BRANDS:
            return "unknown"
        return _ISO_IMAGE_BRANDS.get(brand, "iso-bmff")
    return "unknown"


def sniff_kind(head: bytes) -> MediaKind:
    """Classify the first bytes of a file by signature alone: an image, a video container, or unknown.

    An animated WebP is a video (its header says so); animated GIF and PNG, and containers
    without a known signature, need the whole file: see :func:`sniff_path_kind`.
    """
    found = sniff_format(head)
    if found == "unknown":
        return "unknown"
    if found in _VIDEO_FORMATS or (found == "webp" and _is_animated_webp(head)):
        return "video"
    return "image"


def sniff_path_kind(path: str | os.PathLike, *, timeout_s: float = PROBE_TIMEOUT_S) -> MediaKind:
    """Classify a local file: signatures first, then FFmpeg's own probe for anything else.

    Animated images are videos. Audio-only files, text and anything FFmpeg only guesses at
    (a "misdetection possible" low-score match) are ``unknown``. Pipes, devices and a probe
    that runs past ``timeout_s`` are ``unknown`` too; missing or unreadable files raise ``OSError``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO is refused by fstat, never waited on
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return "unknown"
        head = handle.read(SNIFF_BYTES)
    found = sniff_format(head)
    if found in _ANIMATABLE and _is_animated(path, head, found):
        return "video"
    if found != "unknown":
        return sniff_kind(head)
    if not head:
        return "unknown"
    try:
        kind = probe_kind(ffmpeg_report(str(path), timeout_s=timeout_s))
    except MediaError:
        return "unknown"
    # A single picture without an image signature (SVG, XPM, HTML named .jpg that FFmpeg reads
    # by extension) is nothing the image decoders take: not media.
    return "unknown" if kind == "image" else kind


def ffmpeg_report(path: str, *, timeout_s: float, setting: str = "the probe timeout") -> str:
    """What ``ffmpeg -i`` says about a file (its stderr): container, streams, duration.

    Raises ``MediaError`` naming ``setting`` when FFmpeg runs past ``timeout_s``.
    """
    try:
        result = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"FFmpeg probe ran past {setting} ({timeout_s:g} s)") from None
    return result.stderr.decode("utf-8", "replace")


def probe_kind(report: str) -> MediaKind:
    """The kind of media an ``ffmpeg -i`` report describes.

    ``video`` when a real video stream is present (cover art, which FFmpeg lists as an
    "attached pic" video stream, does not count), ``image`` when FFmpeg read it with a
    single-picture demuxer, otherwise ``unknown``.
    """
    streams = video_stream_lines(report)
    if not streams or "misdetection possible" in report:
        return "unknown"
    if streams[0].split(": Video: ", 1)[1].split(maxsplit=1)[0].rstrip(",") in _TEXT_ART_CODECS:
        return "unknown"
    return "image" if _STILL_DEMUXERS.match(input_format(report)) else "video"


def input_format(report: str) -> str:
    """The demuxer FFmpeg read the file with (``mpeg``, ``ogg``, ``mov,mp4,m4a,3gp,3g2,mj2``, ...), or ``unknown``."""
    found = _INPUT_FORMAT.search(report)
    return found.group(1) if found else "unknown"


def video_stream_lines(report: str) -> list[str]:
    """The report's video stream lines, cover art ("attached pic") left out."""
    return [
        line
        for line in report.splitlines()
        if line.lstrip().startswith("Stream #") and ": Video: " in line and "(attached pic)" not in line
    ]


def _is_animated(path: str | os.PathLike, head: bytes, found: str) -> bool:
    """Whether a GIF, PNG or WebP file holds more than one frame, read from its headers only."""
    if found == "webp":
        return _is_animated_webp(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
            with Image.open(path) as image:
                # GIF: finds a second frame without decoding the first; PNG: the acTL chunk's frame count
                return bool(getattr(image, "is_animated", False))
    except Exception:  # corrupt or oversized: decode_image refuses it with the precise reason
        return False


def _is_animated_webp(head: bytes) -> bool:
    return head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & _WEBP_ANIMATION_FLAG)
