"""Putting an uploaded file into the watched bucket, safely.

An upload is received in chunks into a hidden file readable by its owner only (inside the
bucket when it is local, in the spool folder otherwise), hashed on the way and cut off past the
size limit. It is then classified from its content (images and videos only) and published
under a sanitised name at the top of the bucket, so no name can reach outside it. Publishing
never replaces anything: a local file is hard-linked under its name, which fails when anything
is there (a dangling link included), then under its content-id-prefixed name; a remote object
always gets the content-id prefix, so two different contents never share a name.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.media.sniff import SNIFF_BYTES, sniff_kind, sniff_path_kind
from pipeline.settings import Settings

_UNSAFE = re.compile(r"[^\w.-]+")
MAX_NAME_BYTES = 200  # in UTF-8; with the content-id prefix still within NAME_MAX (255 bytes)
PARTIAL_PREFIX = ".upload-"  # an upload being written; published by a hard link when complete
ABANDONED_AFTER_S = 3600.0  # a partial upload this old was left by a process killed mid-upload


def remove_abandoned_uploads(incoming_uri: str, *, now: float) -> list[str]:
    """Delete partial uploads that a killed process left in a local bucket; return their paths.

    Only the pipeline's own hidden partial files are touched, never anything a user dropped.
    """
    fs, root = fsspec.core.url_to_fs(incoming_uri)
    if not isinstance(fs, LocalFileSystem):
        return []
    removed = []
    for path in Path(root).glob(f"{PARTIAL_PREFIX}*"):
        try:
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > ABANDONED_AFTER_S:
                path.unlink()
                removed.append(str(path))
        except FileNotFoundError:  # published or removed meanwhile
            continue
    return removed


MAX_SUFFIX_BYTES = 16  # a longer "extension" is part of the name, cut like the rest
PREFIX_CHARS = 12  # of the content id, in front of a name that is taken
CHUNK_BYTES = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # a new file, never through a link


class UploadError(ValueError):
    """An upload was refused; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def too_large(settings: Settings) -> UploadError:
    """The refusal of an upload over ``score.max_upload_mb``."""
    limit = settings.score.max_upload_mb
    return UploadError(f"larger than the {limit} MB upload limit (score.max_upload_mb)", status=413)


@dataclass(frozen=True)
class Accepted:
    uri: str
    content_id: str
    kind: str
    size_bytes: int


def safe_name(name: str) -> str:
    """A plain file name of at most MAX_NAME_BYTES in UTF-8: no folders, no leading dots, only
    word characters, dots and dashes; a long name is cut in its stem, keeping the extension."""
    base = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip("._")
    stem, dot, suffix = cleaned.rpartition(".")
    suffix = dot + suffix
    if not dot or len(suffix.encode()) > MAX_SUFFIX_BYTES:
        stem, suffix = cleaned, ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return (stem.encode()[:room].decode("utf-8", "ignore") + suffix) or "upload"


class Upload:
    """One upload being received: ``write`` its chunks, then ``finish`` it under a name.

    Use it as a context manager: the hidden file is removed on leaving, whatever happened.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fs, root = fsspec.core.url_to_fs(settings.storage.incoming_uri)
        self._root = root.rstrip("/")
        self._local = isinstance(self._fs, LocalFileSystem)
        folder = Path(self._root) if self._local else settings.storage.local_root / "spool"
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}"  # hidden: never listed
        self._file = os.fdopen(os.open(self._path, _CREATE, 0o600), "wb")
        self._digest = hashlib.sha256()
        self._head = b""
        self.size = 0

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)

    def write(self, chunk: bytes) -> None:
        """Add the next bytes; UploadError (413) once the upload passes ``score.max_upload_mb``."""
        self.size += len(chunk)
        if self.size > self._settings.score.max_upload_mb * 1024 * 1024:
            raise too_large(self._settings)
        if len(self._head) < SNIFF_BYTES:
            self._head = (self._head + chunk)[:SNIFF_BYTES]
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self, name: str) -> Accepted:
        """Classify the complete upload and publish it in the bucket; UploadError if refused."""
        self._file.close()
        if not self.size:
            raise UploadError("empty file", status=400)
        kind = sniff_path_kind(self._path)
        # FFmpeg's probe alone also "reads" SVG, XPM and HTML named .jpg as pictures: refuse those
        if kind == "unknown" or (kind == "image" and sniff_kind(self._head) == "unknown"):
            raise UploadError("not an image or video (checked from its content, not its name)", status=415)
        content_id = self._digest.hexdigest()
        target = self._publish(safe_name(name), content_id)
        return Accepted(uri=self._fs.unstrip_protocol(target), content_id=content_id, kind=kind, size_bytes=self.size)

    def _publish(self, name: str, content_id: str) -> str:
        prefixed = f"{content_id[:PREFIX_CHARS]}-{name}"
        if not self._local:
            target = f"{self._root}/{prefixed}"
            self._fs.makedirs(self._root, exist_ok=True)
            if not self._fs.exists(target):  # else an object named by this very content is there already
                self._fs.put_file(str(self._path), target)
            return target
        for candidate in (name, prefixed):
            target = f"{self._root}/{candidate}"
            try:
                os.link(self._path, target)  # atomic, and fails on any existing entry, links included
                return target
            except FileExistsError:
                continue
        raise UploadError(f"the bucket already holds {name} and {prefixed}: rename the file to upload it", status=409)


def accept_upload(settings: Settings, name: str, stream: BinaryIO) -> Accepted:
    """Store one uploaded image or video read from ``stream``; raise UploadError if refused."""
    with Upload(settings) as upload:
        while chunk := stream.read(CHUNK_BYTES):
            upload.write(chunk)
        return upload.finish(name)
