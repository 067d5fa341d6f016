"""Putting an uploaded file into the watched bucket, safely.

The upload is read with a hard size cap, sniffed from its content (images and videos only),
and written under a sanitised name at the top of the bucket, so no name can reach outside it
and no earlier object is overwritten.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

import fsspec

from pipeline.media.sniff import SNIFF_BYTES, sniff_kind
from pipeline.settings import Settings

_UNSAFE = re.compile(r"[^\w.-]+")
MAX_NAME_CHARS = 120


class UploadError(ValueError):
    """An upload was refused; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Accepted:
    uri: str
    content_id: str
    kind: str
    size_bytes: int


def safe_name(name: str) -> str:
    """A plain file name: no folders, no leading dots, only word characters, dots and dashes."""
    base = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    stem = _UNSAFE.sub("_", base).lstrip("._")[:MAX_NAME_CHARS]
    return stem or "upload"


def accept_upload(settings: Settings, name: str, stream: BinaryIO) -> Accepted:
    """Store one uploaded image or video in the watched bucket; raise UploadError if refused."""
    limit = settings.score.max_upload_mb * 1024 * 1024
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UploadError(f"larger than the {settings.score.max_upload_mb} MB upload limit", status=413)
    if not data:
        raise UploadError("empty file", status=400)
    kind = sniff_kind(data[:SNIFF_BYTES])
    if kind == "unknown":
        raise UploadError("not an image or video (checked from its content, not its name)", status=415)
    content_id = hashlib.sha256(data).hexdigest()
    fs, root = fsspec.core.url_to_fs(settings.storage.incoming_uri)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    target = f"{root}/{safe_name(name)}"
    if fs.exists(target):  # keep the earlier object; content ids tell the two apart
        target = f"{root}/{content_id[:12]}-{safe_name(name)}"
    with fs.open(target, "wb") as handle:
        handle.write(data)
    return Accepted(uri=fs.unstrip_protocol(target), content_id=content_id, kind=kind, size_bytes=len(data))
