"""Small, clearly synthetic labelled media for the offline demo and the tests.

Real class: random crops of the photographs that ship with scikit-image. Fake class: the
same crops shrunk and re-grown by zero-insertion up-sampling plus a blur, the
"checkerboard" trace that transposed-convolution generators leave. Videos pan across a
photograph; fake videos apply the same up-sampling to every frame. A real crop and its
fake share a group, so a group-aware split keeps them together.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from pipeline.media.video import ffmpeg_exe

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "horse",
    "coins",
)
CROP = 192


@dataclass(frozen=True)
class SyntheticSet:
    root: Path
    labels_csv: Path
    images: int
    videos: int


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as RGB uint8."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def generator_upsample(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Shrink, then re-grow by zero insertion and a blur, as a transposed convolution does."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    grown = np.zeros((small.shape[0] * factor, small.shape[1] * factor, 3), np.float32)
    grown[::factor, ::factor] = small
    kernel = np.outer(*(2 * [np.convolve(np.ones(factor), np.ones(factor)) / factor]))
    grown = cv2.filter2D(grown, -1, kernel.astype(np.float32))
    return np.clip(cv2.resize(grown, (width, height)), 0, 255).astype(np.uint8)


def random_crop(image: np.ndarray, rng: np.random.Generator, size: int = CROP) -> np.ndarray:
    height, width = image.shape[:2]
    if min(height, width) < size:
        image = cv2.resize(image, (max(size, width), max(size, height)))
        height, width = image.shape[:2]
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    return image[top : top + size, left : left + size]


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def pan_frames(image: np.ndarray, frames: int, size: int = CROP) -> list[np.ndarray]:
    """Frames of a slow diagonal pan across a photograph."""
    height, width = image.shape[:2]
    if min(height, width) < size + frames:
        image = cv2.resize(image, (max(width, size + frames), max(height, size + frames)))
        height, width = image.shape[:2]
    span_y, span_x = height - size, width - size
    return [
        image[int(span_y * t) : int(span_y * t) + size, int(span_x * t) : int(span_x * t) + size]
        for t in np.linspace(0, 1, frames)
    ]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 12) -> None:
    """Encode RGB frames to H.264 MP4 with the shipped FFmpeg."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    command = [
        ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "pipe:",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "veryfast",
        str(path),
    ]
    subprocess.run(command, input=np.stack(frames).tobytes(), check=True, timeout=60)


def make_labelled_set(root: Path, *, crops_per_photo: int = 4, videos: int = 6, seed: int = 0) -> SyntheticSet:
    """Write images, videos and a Kaggle-style ``labels.csv`` (file_name,label,group)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, str]] = []
    for name in PHOTOS:
        source = photo(name)
        for index in range(crops_per_photo):
            crop, group = random_crop(source, rng), f"{name}-{index}"
            for label, image in ((0, crop), (1, generator_upsample(crop))):
                file_name = f"images/{group}-{'fake' if label else 'real'}.jpg"
                write_image(root / file_name, image)
                rows.append((file_name, label, group))
    for index in range(videos):
        name = PHOTOS[index % len(PHOTOS)]
        frames = pan_frames(photo(name), 24)
        for label, clip in ((0, frames), (1, [generator_upsample(f) for f in frames])):
            file_name = f"videos/{name}-pan{index}-{'fake' if label else 'real'}.mp4"
            write_video(root / file_name, clip)
            rows.append((file_name, label, f"{name}-pan{index}"))
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label", "group"])
        writer.writerows(rows)
    return SyntheticSet(root, labels, len(PHOTOS) * crops_per_photo * 2, videos * 2)


def rendered_chart(rng: np.random.Generator, width: int = 288, height: int = 216) -> np.ndarray:
    """A bar chart drawn in software: neither a photograph nor a generator's output, so unlike any training data."""
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.line(image, (30, height - 30), (width - 10, height - 30), (0, 0, 0), 1)
    cv2.line(image, (30, 10), (30, height - 30), (0, 0, 0), 1)
    colours = ((31, 119, 180), (255, 127, 14), (44, 160, 44))
    for bar in range(6):
        left = 40 + bar * 40
        cv2.rectangle(image, (left, int(rng.integers(30, height - 40))), (left + 25, height - 31), colours[bar % 3], -1)
        cv2.putText(image, f"Q{bar + 1}", (left, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "Quarterly results", (60, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def drop_incoming(folder: Path, *, seed: int = 99) -> list[Path]:
    """Put a few unseen real and fake videos and images, a chart unlike any training data, and one bad file
    in a watched folder."""
    rng = np.random.default_rng(seed)
    dropped: list[Path] = []
    for name in ("coffee", "astronaut"):
        frames = pan_frames(random_crop(photo(name), rng, 320), 36)
        for kind, clip in (("real", frames), ("fake", [generator_upsample(f) for f in frames])):
            dropped.append(folder / f"{name}-{kind}.mp4")
            write_video(dropped[-1], clip)
    crop = random_crop(photo("chelsea"), rng)
    for kind, image in (("real", crop), ("fake", generator_upsample(crop))):
        dropped.append(folder / f"chelsea-{kind}.jpg")
        write_image(dropped[-1], image)
    dropped.append(folder / "chart.jpg")
    write_image(dropped[-1], rendered_chart(rng))
    dropped.append(folder / "notes.mp4")
    dropped[-1].write_text("not a video: text renamed to .mp4\n")
    return dropped
