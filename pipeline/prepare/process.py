"""Turn one source file into stored square frames, or a quarantine reason.

Images and video frames share one decode -> resize -> JPEG path (pipeline.media.images).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import fsspec
import numpy as np

from pipeline import bucket
from pipeline.media.faces import frame_region
from pipeline.media.images import MediaError, decode_image, encode_jpeg, resize_to_square
from pipeline.media.sniff import SNIFF_BYTES, sniff_format, sniff_path_kind
from pipeline.media.stats import brightness, image_stats, video_stats
from pipeline.media.video import DecodeLimits, extract_frames
from pipeline.prepare.sources import SourceItem
from pipeline.settings import PrepareSettings, ResizePolicy

Progress = Callable[[int, int], None]
_PHASH_INPUT = 32  # imagehash.phash works on a 32x32 greyscale image
_PHASH_BITS = 8  # and keeps the 8x8 lowest frequencies
# The first rows of scipy.fftpack.dct (type II, unscaled) as a matrix: two small products give the
# 8x8 lowest frequencies without computing the other 960.
_DCT_ROWS = 2 * np.cos(np.pi * np.outer(np.arange(_PHASH_BITS), 2 * np.arange(_PHASH_INPUT) + 1) / (2 * _PHASH_INPUT))


@dataclass
class FrameRecord:
    path: str
    index: int
    time_s: float
    phash: str


@dataclass
class ItemResult:
    """What happened to one source file; ``reason`` is set when it was quarantined."""

    uri: str
    label: int
    group: str | None
    split: str | None
    method: str | None = None  # the generator or manipulation, where the labels name it
    content_id: str = ""
    kind: str = "unknown"
    reason: str | None = None
    width: int = 0
    height: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    codec: str = "unknown"
    bits_per_pixel: float = 0.0
    brightness: float | None = None  # mean luma of the decoded frames, 0-1 (None: processed before it was kept)
    steps: list[str] = field(default_factory=list)
    frames: list[FrameRecord] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> ItemResult:
        return cls(**{**data, "frames": [FrameRecord(**f) for f in data.get("frames", [])]})

    def to_dict(self) -> dict:
        # dataclasses.asdict deep-copies recursively: several times slower over 100k items
        return {**vars(self), "steps": list(self.steps), "frames": [dict(vars(f)) for f in self.frames]}


def content_id(data: bytes) -> str:
    """The identity of a media item everywhere in the pipeline: sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def file_content_id(path: str) -> str:
    """:func:`content_id` of a local file, read in chunks."""
    with open(path, "rb", opener=_open_nonblocking) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_media(uri: str, size: int = -1) -> bytes:
    """The bytes of a source file (the first ``size`` if given).

    Local pipes and devices are refused before reading: reading one would block or never end.
    Local paths skip fsspec, whose per-call cost is noticeable over 100k small files.
    """
    if "://" in uri and not uri.startswith("file://"):
        with fsspec.open(uri, "rb") as handle:
            return handle.read(size)
    # Opened without blocking, so that a pipe is refused by fstat instead of waiting for a writer.
    with open(uri.removeprefix("file://"), "rb", opener=_open_nonblocking) as handle:  # dangling links raise
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise MediaError("not a regular file (pipe, socket or device)")
        return handle.read(size)


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def process_item(item: SourceItem, settings: PrepareSettings, frames_dir: Path) -> ItemResult:
    """Store the frames of one item under ``frames_dir``; never raises for bad media.

    A remote item is first spooled in chunks to a temporary file beside ``frames_dir`` (and
    hashed on the way), so that no item is ever held whole in memory, whatever its size.
    """
    result = ItemResult(item.uri, item.label, item.group, item.split, item.method)
    try:
        with _local_copy(item.uri, frames_dir.parent / "spool") as (local, known_id):
            _process_local(local, known_id, result, settings, frames_dir)
    except OSError as error:
        result.reason = f"unreadable file: {error.strerror or error}"
    except MediaError as error:
        result.reason = str(error)
        result.frames = []
    return result


@contextmanager
def _local_copy(uri: str, spool_dir: Path) -> Iterator[tuple[str, str | None]]:
    """(local path, content sha256 if already known): local files as they are, remote ones spooled."""
    if "://" not in uri or uri.startswith("file://"):
        yield uri.removeprefix("file://"), None
        return
    found = bucket.stat_object(uri)
    if found is None:
        raise bucket.ObjectError("vanished before it was read")
    with bucket.materialised(found, max_bytes=found.size, spool_dir=spool_dir) as copy:
        yield str(copy.path), copy.content_id


def _process_local(
    path: str, known_id: str | None, result: ItemResult, settings: PrepareSettings, frames_dir: Path
) -> None:
    # Classified by probing (any container FFmpeg reads; animations are videos); a video is
    # hashed in chunks and read by FFmpeg in place, never held in memory.
    result.kind = sniff_path_kind(path, timeout_s=settings.ffmpeg_timeout_s)
    if result.kind == "video":
        result.content_id = known_id or file_content_id(path)
        _process_video(path, result, settings, frames_dir)
        return
    data = read_media(path)
    result.content_id = known_id or content_id(data)
    if not data:
        raise MediaError("empty file (0 bytes)")
    if result.kind != "image":
        raise MediaError("not an image or video (unrecognised content)")
    _process_image(data, result, settings, frames_dir)


def _process_image(data: bytes, result: ItemResult, settings: PrepareSettings, frames_dir: Path) -> None:
    rgb, result.steps = decode_image(data)
    result.height, result.width = rgb.shape[:2]
    result.codec = sniff_format(data[:SNIFF_BYTES])
    result.bits_per_pixel = image_stats(result.codec, result.width, result.height, len(data)).bits_per_pixel
    result.brightness = brightness([rgb])
    result.frames = [_store_frame(rgb, result.content_id, 0, 0.0, settings, frames_dir)]


def _process_video(path: str, result: ItemResult, settings: PrepareSettings, frames_dir: Path) -> None:
    info, frames = extract_frames(
        path,
        limits=DecodeLimits.from_settings(settings),
        mode=settings.frame_sampling,
        count=settings.frames_per_video,
        fps=settings.sample_fps,
        max_frames=settings.max_frames_per_video,
        timeout_s=settings.ffmpeg_timeout_s,
    )
    result.width, result.height, result.duration_s, result.fps = info.width, info.height, info.duration_s, info.fps
    result.codec = info.codec
    result.bits_per_pixel = video_stats(info).bits_per_pixel
    result.brightness = brightness([f.rgb for f in frames])
    if info.rotation:
        result.steps.append(f"rotated_{info.rotation}")
    result.frames = [_store_frame(f.rgb, result.content_id, f.index, f.time_s, settings, frames_dir) for f in frames]


def _store_frame(
    rgb: np.ndarray, cid: str, index: int, time_s: float, settings: PrepareSettings, frames_dir: Path
) -> FrameRecord:
    region = frame_region(rgb, settings.crop)
    size, policy = settings.frame_size, settings.resize_policy
    if region.shape[0] * region.shape[1] < size * size:
        # Upscaling: hash the small region and swap to the encoder's colour order before resizing,
        # on a few thousand pixels rather than the 65,536 of the stored square.
        hashed = region
        jpeg = encode_jpeg(resize_to_square(cv2.cvtColor(region, cv2.COLOR_RGB2BGR), size, policy), channels="BGR")
    else:
        hashed = resize_to_square(region, size, policy)
        jpeg = encode_jpeg(hashed)
    folder = os.path.join(frames_dir, cid[:2])  # str paths: pathlib's joins cost more than the write
    path = os.path.join(folder, f"{cid}_{index:04d}.jpg")
    try:
        _write(path, jpeg)
    except FileNotFoundError:  # the first frame in this folder; checking on every frame costs more
        os.makedirs(folder, exist_ok=True)
        _write(path, jpeg)
    return FrameRecord(path, index, time_s, perceptual_hash(hashed, policy))


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def perceptual_hash(rgb: np.ndarray, policy: ResizePolicy) -> str:
    """imagehash's pHash of ``rgb`` brought to a 32x32 greyscale thumbnail by ``policy``, as 16 hex digits.

    The thumbnail is made by OpenCV, and from the frame before upscaling where that is smaller
    than the stored square: the same picture, without shrinking 65,536 pixels back down (the
    costliest step for a CIFAKE image). The DCT coefficients, median and bits are
    ``imagehash.phash``'s, without its PIL round trips (tests/prepare/test_process.py checks the bits).
    """
    grey = cv2.cvtColor(resize_to_square(rgb, _PHASH_INPUT, policy), cv2.COLOR_RGB2GRAY)
    # Rounded so that coefficients scipy's DCT gives as exact zeros (flat areas) are zeros here too.
    low = np.round(_DCT_ROWS @ grey @ _DCT_ROWS.T, 6)
    middle = np.sort(low, axis=None)[low.size // 2 - 1 : low.size // 2 + 1]
    return np.packbits(low > (middle[0] + middle[1]) / 2).tobytes().hex()  # np.median's value, at a third of its cost


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, also inside a Celery worker's task.

    Celery's prefork pool marks its children daemonic, and Airflow's task process inherits the
    mark through os.fork although nothing will ever terminate it as a daemon: multiprocessing
    would refuse it any child ("daemonic processes are not allowed to have children").
    """
    multiprocessing.current_process().daemon = False
    return ProcessPoolExecutor(max_workers=workers)


def process_items(
    items: Iterable[SourceItem],
    settings: PrepareSettings,
    frames_dir: Path,
    *,
    workers: int | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    on_progress: Progress | None = None,
) -> list[ItemResult]:
    """Process items on all cores (order preserved), handing each result to ``on_result`` as it comes
    and reporting ``on_progress(done, total)``."""
    items = list(items)
    workers = workers or os.cpu_count() or 1
    results: list[ItemResult] = []
    if workers == 1 or len(items) < 8:
        mapped = (process_item(item, settings, frames_dir) for item in items)
        executor = None
    else:
        executor = _process_pool(workers)
        chunk = max(1, min(256, len(items) // (workers * 8)))
        # Settings travel once per chunk with the function, not once per item (pickling them cost more than a hash).
        work = partial(process_item, settings=settings, frames_dir=frames_dir)
        mapped = executor.map(work, items, chunksize=chunk)
    try:
        for result in mapped:
            results.append(result)
            if on_result:
                on_result(result)
            if on_progress:
                on_progress(len(results), len(items))
    finally:
        if executor:
            executor.shutdown()
    return results
