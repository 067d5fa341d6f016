"""Files one task hands to another under ``storage.root``, which may be a URI (``s3://bucket/prefix``).

Prepare writes frames on local disk and publishes them under the root; training reads them
through tf.data, which needs local files, so it fetches them back once into a local cache.
Frames are content-addressed (the media's sha256 and the frame's index, in a folder per crop,
resize policy and size), so a location never changes content and a cached copy stays valid.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
from upath import UPath

FETCH_CHUNK = 1000  # files fetched concurrently between two progress reports

log = logging.getLogger(__name__)


def publish(folder: Path, destination: UPath) -> dict[str, str]:
    """Upload every file under ``folder`` to the same relative place under ``destination``.

    Returns each local file's path -> its URI.
    """
    base = str(destination).rstrip("/")
    uris = {str(path): f"{base}/{path.relative_to(folder).as_posix()}" for path in folder.rglob("*") if path.is_file()}
    if uris:
        started = time.perf_counter()
        destination.fs.put(list(uris), list(uris.values()))
        log.info("published %d files to %s in %.1f s", len(uris), base, time.perf_counter() - started)
    return uris


def local_copies(
    locations: list[str], cache: Path, *, on_progress: Callable[[int, int], None] | None = None
) -> list[str]:
    """Local paths of ``locations``, in order: local paths as they are, URIs fetched into ``cache`` once.

    A URI's copy is ``cache/<scheme>/<rest of the URI>``; fetches land in a staging folder and
    are renamed into place, so an interrupted fetch never leaves a partial file in the cache.
    ``on_progress(done, total)`` follows the files fetched.
    """
    local = [_cached_path(uri, cache) if "://" in uri else uri for uri in locations]
    remote = {(uri, path) for uri, path in zip(locations, local, strict=True) if uri != path}
    missing = sorted((uri, path) for uri, path in remote if not os.path.exists(path))
    if not missing:
        return local
    fs, _ = fsspec.core.url_to_fs(missing[0][0])
    started = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as staging:
        for start in range(0, len(missing), FETCH_CHUNK):
            chunk = missing[start : start + FETCH_CHUNK]
            staged = [os.path.join(staging, str(number)) for number in range(len(chunk))]
            fs.get([uri for uri, _ in chunk], staged)
            for (_, path), copy in zip(chunk, staged, strict=True):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(copy, path)
            done = start + len(chunk)
            log.info("fetched %d of %d files into %s", done, len(missing), cache)
            if on_progress:
                on_progress(done, len(missing))
    log.info("fetched %d files in %.1f s", len(missing), time.perf_counter() - started)
    return local


def _cached_path(uri: str, cache: Path) -> str:
    scheme, rest = uri.split("://", 1)
    return os.path.join(cache, scheme, rest.lstrip("/"))
