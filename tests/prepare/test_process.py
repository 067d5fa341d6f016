from pathlib import Path

import cv2
import imagehash
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.media.images import encode_jpeg, resize_to_square
from pipeline.prepare.process import perceptual_hash, process_item
from pipeline.prepare.sources import SourceItem
from pipeline.settings import PrepareSettings
from pipeline.synthetic import photo


@given(
    seed=st.integers(0, 2**16),
    height=st.integers(8, 300),
    width=st.integers(8, 300),
    flat=st.booleans(),
    policy=st.sampled_from(["squash", "letterbox", "center_crop"]),
)
@settings(max_examples=150, deadline=None)
def test_perceptual_hash_has_imagehash_bits(seed, height, width, flat, policy):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3)
    image = np.full(shape, rng.integers(0, 255), np.uint8) if flat else rng.integers(0, 255, shape, np.uint8)
    thumbnail = Image.fromarray(cv2.cvtColor(resize_to_square(image, 32, policy), cv2.COLOR_RGB2GRAY))
    assert perceptual_hash(image, policy) == str(imagehash.phash(thumbnail))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_small_frame_hashes_like_its_stored_square(name):
    """Small frames are hashed before upscaling; the hash must not depend on that shortcut."""
    small = np.asarray(Image.fromarray(photo(name)).resize((32, 32), Image.Resampling.BOX))
    square = resize_to_square(small, 256, "letterbox")
    assert perceptual_hash(small, "letterbox") == perceptual_hash(square, "letterbox")


@pytest.mark.parametrize("policy", ["squash", "letterbox", "center_crop"])
@pytest.mark.parametrize("shape", [(24, 40), (300, 500)], ids=["upscaled", "downscaled"])
def test_a_stored_frame_is_the_rgb_square_encoded(tmp_path, policy, shape):
    """Upscaled frames swap colour order before resizing; the stored bytes must not show it."""
    rgb = np.ascontiguousarray(photo("chelsea")[: shape[0], : shape[1]])
    source = tmp_path / "source.png"
    Image.fromarray(rgb).save(source)
    settings = PrepareSettings(frame_size=64, resize_policy=policy)
    result = process_item(SourceItem(str(source), 0), settings, tmp_path / "frames")
    assert Path(result.frames[0].path).read_bytes() == encode_jpeg(resize_to_square(rgb, 64, policy))


def test_training_frames_never_carry_metadata(tmp_path, c2pa_sign):
    """Prepare stores decoded pixels only: files that differ only in provenance metadata give identical frames."""
    import io

    from PIL import PngImagePlugin

    from pipeline.prepare.dataset import assemble_dataset

    rgb = np.ascontiguousarray(photo("astronaut")[:120, :160])
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    plain = buffer.getvalue()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20, Sampler: Euler a, Model: sd15")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", pnginfo=info)
    variants = {"plain.png": plain, "generator.png": buffer.getvalue(), "signed.png": c2pa_sign(plain, "image/png")}
    settings = PrepareSettings(frame_size=64)
    results = []
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        results.append(process_item(SourceItem(str(tmp_path / name), 1), settings, tmp_path / "frames"))
    assert len({r.content_id for r in results}) == 3  # three different files
    assert len({Path(r.frames[0].path).read_bytes() for r in results}) == 1  # one picture
    fillers = {f"real{i}.png": 0 for i in range(3)} | {f"fake{i}.png": 1 for i in range(2)}  # 3 groups of each class
    for seed, (name, label) in enumerate(fillers.items()):
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), np.uint8)).save(tmp_path / name)
        results.append(process_item(SourceItem(str(tmp_path / name), label), settings, tmp_path / "frames"))
    manifest = assemble_dataset(results, [], settings, tmp_path / "datasets").manifest
    assert not {"provenance", "c2pa", "generator", "parameters"} & set(manifest.columns)


def _process_in_a_daemon(folder: str, answers) -> None:
    from pipeline.prepare.process import process_items

    items = [SourceItem(str(path), 0) for path in sorted(Path(folder).glob("*.png"))]
    try:
        results = process_items(items, PrepareSettings(frame_size=32), Path(folder) / "frames", workers=2)
        answers.put([result.reason for result in results])
    except Exception as error:  # noqa: BLE001 - the parent asserts on what happened here
        answers.put(repr(error))


def test_items_are_processed_on_a_pool_inside_a_daemonic_process(tmp_path):
    """A Celery prefork worker's task is a daemonic process: its pool of item processes must still start."""
    import multiprocessing

    for seed in range(8):
        pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{seed}.png")
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    worker = context.Process(target=_process_in_a_daemon, args=(str(tmp_path), answers), daemon=True)
    worker.start()
    answer = answers.get(timeout=120)
    worker.join(timeout=30)
    assert answer == [None] * 8  # eight frames, no quarantine reason, no error
