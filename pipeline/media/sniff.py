"""Detect media kind from content (magic bytes), never from the file extension."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["image", "video", "unknown"]

_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_VIDEO_SIGNATURES = (b"\x1a\x45\xdf\xa3",)  # Matroska / WebM
_ISO_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ")
SNIFF_BYTES = 32


def sniff_kind(head: bytes) -> MediaKind:
    """Classify the first bytes of a file as an image, a video container, or unknown."""
    if head.startswith(_IMAGE_SIGNATURES):
        return "image"
    if head[:4] == b"RIFF":
        return {b"WEBP": "image", b"AVI ": "video"}.get(head[8:12], "unknown")
    if head[4:8] == b"ftyp":  # ISO base media: mp4, mov, m4v, 3gp, heic/avif
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"avif", b"mif1"):
            return "image"
        return "unknown" if brand in _ISO_AUDIO_BRANDS else "video"
    if head.startswith(_VIDEO_SIGNATURES):
        return "video"
    return "unknown"
