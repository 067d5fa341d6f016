"""The watched bucket: a listing no entry can break, and reading objects in bounded memory.

A local bucket (``file://``) is walked without following links out of it; anything that is not
a regular readable file (a FIFO, a device, a socket, a dangling link) is reported with a reason
instead of being opened. Remote buckets (``s3://`` and other fsspec URIs) are listed by fsspec.
Objects are read once, in chunks: hashed in place when local, spooled to a temporary file while
hashing when remote, so that FFmpeg and the decoders read a local file and memory does not grow
with the object's size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK_BYTES = 1 << 20
SIDECAR_SUFFIXES = frozenset({".csv", ".json", ".jsonl", ".txt", ".md", ".yaml", ".yml", ".parquet", ".xml"})


@dataclass(frozen=True)
class BucketObject:
    uri: str
    size: int
    mtime: float  # seconds since the epoch, as the file system or object store reports it


@dataclass(frozen=True)
class Skipped:
    uri: str
    reason: str


@dataclass
class Listing:
    objects: list[BucketObject] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # entries that cannot be media, with why
    sidecars: list[str] = field(default_factory=list)  # labels, manifests and notes: not media, no verdict


class ObjectError(OSError):
    """One object cannot be read; the message is the reason recorded for it."""


class StillWriting(ObjectError):
    """The object changed while it was read: a copy or upload still in progress."""


@dataclass(frozen=True)
class Materialised:
    """An object read once: its content sha256 and a stable local file (None when over the size limit)."""

    content_id: str
    size: int
    path: Path | None


def list_bucket(uri: str) -> Listing:
    """Every object under ``uri``; hidden files and folders (``.processed/`` and the like) are left out."""
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        Path(root).mkdir(parents=True, exist_ok=True)
        return _list_local(Path(root))
    if not fs.exists(root):
        fs.makedirs(root, exist_ok=True)
        return Listing()
    listing = Listing()
    for path, info in sorted(fs.find(root, detail=True).items()):
        if any(part.startswith(".") for part in path[len(root) :].split("/")):
            continue
        _add(listing, BucketObject(fs.unstrip_protocol(path), int(info.get("size") or 0), _mtime(info)))
    return listing


def _list_local(root: Path) -> Listing:
    listing, real_root = Listing(), os.path.realpath(root)

    def unreadable_folder(error: OSError) -> None:
        listing.skipped.append(Skipped(_file_uri(error.filename), f"folder not readable: {error.strerror}"))

    for folder, folders, files in os.walk(root, onerror=unreadable_folder):
        for name in list(folders):
            if name.startswith("."):
                folders.remove(name)
            elif os.path.islink(os.path.join(folder, name)):
                folders.remove(name)
                link = _file_uri(os.path.join(folder, name))
                listing.skipped.append(Skipped(link, "link to a folder (not followed)"))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            entry = _local_entry(path, real_root)
            if entry is not None:
                _add(listing, entry)
    listing.objects.sort(key=lambda o: o.uri)
    return listing


def _local_entry(path: str, real_root: str) -> BucketObject | Skipped | None:
    """What one directory entry is, without opening it; None when it vanished meanwhile."""
    uri = _file_uri(path)
    try:
        if os.path.islink(path):
            target = os.path.realpath(path)
            if not os.path.exists(target):
                return Skipped(uri, "dangling symbolic link")
            if os.path.commonpath([real_root, target]) != real_root:
                return Skipped(uri, "symbolic link out of the bucket (not followed)")
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        return Skipped(uri, f"cannot be read: {error.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return Skipped(uri, f"not a regular file ({_file_type(info.st_mode)})")
    if not os.access(path, os.R_OK):
        return Skipped(uri, "not readable (permission denied)")
    return BucketObject(uri, info.st_size, info.st_mtime)


def _add(listing: Listing, entry: BucketObject | Skipped) -> None:
    if isinstance(entry, Skipped):
        listing.skipped.append(entry)
    elif Path(entry.uri).suffix.lower() in SIDECAR_SUFFIXES:
        listing.sidecars.append(entry.uri)
    else:
        listing.objects.append(entry)


def settled(
    objects: list[BucketObject], *, settle_s: float, now: float
) -> tuple[list[BucketObject], list[BucketObject]]:
    """Split objects into those unchanged for ``settle_s`` (ready) and those modified since (young)."""
    ready = [o for o in objects if now - o.mtime >= settle_s]
    return ready, [o for o in objects if now - o.mtime < settle_s]


def stat_object(uri: str) -> BucketObject | None:
    """The object at ``uri`` now, or None when it is gone."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return BucketObject(uri, int(info.get("size") or 0), _mtime(info))


def content_sha256(obj: BucketObject, *, spool_dir: Path) -> str:
    """The sha256 of an object's content, streamed (nothing is kept)."""
    with materialised(obj, max_bytes=-1, spool_dir=spool_dir) as item:
        return item.content_id


@contextmanager
def materialised(obj: BucketObject, *, max_bytes: int, spool_dir: Path) -> Iterator[Materialised]:
    """Read ``obj`` once in chunks: its sha256, and a local file to decode.

    Local objects are read in place; remote ones are spooled to a temporary file in
    ``spool_dir``, removed afterwards. An object larger than ``max_bytes`` is only hashed
    (``path`` is None). Raises ``StillWriting`` when the object changed while it was read, and
    ``ObjectError`` when it is not a regular file or cannot be read.
    """
    fs, path = fsspec.core.url_to_fs(obj.uri)
    if isinstance(fs, LocalFileSystem):
        content_id, size = _hash_local(path, obj)
        yield Materialised(content_id, size, Path(path) if size <= max_bytes else None)
        return
    spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="spool-", suffix=".media") as spool:
        digest, size = hashlib.sha256(), 0
        try:
            with fs.open(path, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    if size <= max_bytes:
                        spool.write(chunk)
        except FileNotFoundError:
            raise ObjectError("vanished before it was read") from None
        spool.flush()
        if size != obj.size:
            raise StillWriting(f"size changed while it was read ({obj.size} -> {size} bytes)")
        yield Materialised(digest.hexdigest(), size, Path(spool.name) if size <= max_bytes else None)


def _hash_local(path: str, obj: BucketObject) -> tuple[str, int]:
    try:
        # Non-blocking, so that a FIFO swapped in after the listing cannot hang the read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ObjectError("vanished before it was read") from None
    except OSError as error:
        raise ObjectError(f"cannot be read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise ObjectError(f"not a regular file ({_file_type(before.st_mode)})")
        digest = hashlib.file_digest(handle, "sha256")
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime) != (before.st_size, before.st_mtime) or after.st_size != obj.size:
        raise StillWriting(f"changed while it was read ({obj.size} -> {after.st_size} bytes)")
    if before.st_mtime != obj.mtime:
        raise StillWriting("modified after it was listed")
    return digest.hexdigest(), after.st_size


def _mtime(info: dict) -> float:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified", 0.0)))
    return value.timestamp() if isinstance(value, datetime) else float(value or 0.0)


def _file_uri(path: str) -> str:
    return "file://" + path


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a file"
