"""Detect media kind and format from content (magic bytes), never from the file extension."""

from __future__ import annotations

from typing import Literal

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
SNIFF_BYTES = 32


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
    """Classify the first bytes of a file as an image, a video container, or unknown."""
    found = sniff_format(head)
    if found == "unknown":
        return "unknown"
    return "video" if found in _VIDEO_FORMATS else "image"
