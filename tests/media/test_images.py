import io
import itertools
import tarfile

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.media.images import (
    MediaError,
    decode_image,
    decode_jpeg,
    encode_jpeg,
    is_plain_jpeg,
    resize_to_square,
)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    size=st.sampled_from([32, 64, 256]),
    policy=st.sampled_from(["squash", "letterbox", "center_crop"]),
)
@settings(max_examples=60, deadline=None)
def test_every_policy_gives_a_square_of_the_requested_size(height, width, size, policy):
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert resize_to_square(image, size, policy).shape == (size, size, 3)


def test_letterbox_keeps_aspect_with_black_bars_and_center_crop_fills():
    wide = np.full((50, 100, 3), 200, np.uint8)
    boxed = resize_to_square(wide, 64, "letterbox")
    assert boxed[:10].max() == 0 and boxed[-10:].max() == 0  # bars above and below
    assert boxed[32, 32].min() == 200
    assert resize_to_square(wide, 64, "center_crop").min() == 200  # no padding at all


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "LA", "P", "I;16"])
def test_unusual_colour_modes_become_rgb(mode):
    image = Image.new(mode, (20, 10))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    rgb, steps = decode_image(_encode(image, fmt))
    assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8
    assert steps == [f"converted_{Image.open(io.BytesIO(_encode(image, fmt))).mode}_to_RGB"]


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgb, _ = decode_image(_encode(transparent, "PNG"))
    assert rgb.min() == 255


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rgb, steps = decode_image(_encode(image, "JPEG", exif=exif))
    assert rgb.shape == (40, 20, 3) and steps == ["exif_rotated"]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"\xff\xd8\xff\xe0 truncated jpeg", "undecodable image"),
    ],
)
def test_bad_bytes_give_a_reason(data, reason):
    with pytest.raises(MediaError, match=reason):
        decode_image(data)


def test_decompression_bomb_is_refused():
    bomb = _encode(Image.new("1", (10_000, 10_000)), "PNG")  # 100 Mpx, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(MediaError, match="decompression bomb|too large"):
        decode_image(bomb)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_are_left_to_the_video_decoder(fmt):
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(MediaError, match="animated image \\(3 frames\\) .* sniff_path_kind"):
        decode_image(buffer.getvalue())


def _claiming(size: tuple[int, int], **options) -> bytes:
    """A complete small JPEG whose frame header is rewritten to claim ``size``: a few hundred bytes."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), (120, 130, 140)), "JPEG", **options))
    frame = max(data.find(bytes([0xFF, marker])) for marker in (0xC0, 0xC2))
    data[frame + 5 : frame + 9] = size[1].to_bytes(2, "big") + size[0].to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("variant", ["baseline", "progressive", "exif (the Pillow path)"])
def test_a_tiny_jpeg_claiming_a_huge_size_is_refused(variant):
    """Probe 4: 690 bytes claiming 8000x8000 decoded (grey padding) and was scored."""
    exif = Image.Exif()
    exif[0x0131] = "camera firmware"
    options = {"baseline": {}, "progressive": {"progressive": True}}.get(variant, {"exif": exif})
    corrupt = _claiming((8000, 8000), **options)
    assert len(corrupt) < 1000 and corrupt.endswith(b"\xff\xd9")
    with pytest.raises(MediaError, match=r"truncated or corrupt JPEG: 8000x8000 needs at least \d+ bytes"):
        decode_image(corrupt)
    assert decode_image(_claiming((16, 16), **options))[0].shape == (16, 16, 3)  # the same bytes, honest size


@pytest.mark.parametrize("progressive", [False, True])
def test_large_flat_jpegs_compress_well_yet_pass_the_size_check(progressive):
    flat = _encode(Image.new("RGB", (3000, 2000), (90, 90, 90)), "JPEG", optimize=True, progressive=progressive)
    assert decode_image(flat)[0].shape == (2000, 3000, 3)


def test_truncated_files_are_refused_even_if_pillow_was_told_to_pad_them(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries set it
    photo = Image.fromarray(skimage.data.astronaut())
    for fmt in ("PNG", "JPEG"):
        data = _encode(photo, fmt)
        with pytest.raises(MediaError, match="undecodable image"):
            decode_image(data[: len(data) // 2])


def test_jpeg_round_trip_is_close():
    ramp = np.linspace(0, 255, 64)
    image = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128.0), axis=-1).astype(np.uint8)
    assert np.abs(decode_jpeg(encode_jpeg(image)).astype(int) - image).mean() < 2


def _photo_jpeg(image: np.ndarray, **options) -> bytes:
    return _encode(Image.fromarray(image), "JPEG", **options)


@given(
    height=st.integers(1, 80),
    width=st.integers(1, 80),
    subsampling=st.sampled_from([0, 1, 2]),
    quality=st.integers(40, 100),
    progressive=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_plain_jpegs_take_the_opencv_path_with_pillows_pixels(height, width, subsampling, quality, progressive, seed):
    smooth = np.random.default_rng(seed).integers(0, 255, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR))
    data = _photo_jpeg(image, quality=quality, subsampling=subsampling, progressive=progressive)
    assert is_plain_jpeg(data)
    rgb, steps = decode_image(data)
    assert steps == []
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_photos_decode_to_pillows_pixels():
    for photo in (skimage.data.astronaut(), skimage.data.coffee()):
        data = _photo_jpeg(photo, quality=90)
        assert is_plain_jpeg(data)
        np.testing.assert_array_equal(decode_image(data)[0], np.asarray(Image.open(io.BytesIO(data))))


def test_shared_cifake_jpegs_decode_to_pillows_pixels(shared_datasets):
    with tarfile.open(shared_datasets / "cifake" / "test.tar.gz") as archive:
        members = itertools.islice(filter(tarfile.TarInfo.isfile, archive), 500)
        files = [archive.extractfile(member).read() for member in members]
    assert all(is_plain_jpeg(data) for data in files)
    for data in files:
        np.testing.assert_array_equal(decode_image(data)[0], np.asarray(Image.open(io.BytesIO(data))))


def test_jpegs_that_need_pillow_are_not_plain():
    photo = skimage.data.chelsea()
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 3
    needs_pillow = {
        "exif": _photo_jpeg(photo, exif=exif),
        "icc profile": _photo_jpeg(photo, icc_profile=b"\0" * 128),
        "greyscale": _encode(Image.fromarray(photo).convert("L"), "JPEG"),
        "cmyk": _encode(Image.fromarray(photo).convert("CMYK"), "JPEG"),
        "truncated": _photo_jpeg(photo)[:-100],
        "bomb": _photo_jpeg(photo)[:2] + b"\xff\xc0\x00\x11\x08\x30\x00\x30\x00\x03" + _photo_jpeg(photo)[2:],
    }
    for name, data in needs_pillow.items():
        assert not is_plain_jpeg(data), name
    with pytest.raises(MediaError, match="undecodable image"):
        decode_image(needs_pillow["truncated"])
    assert decode_image(needs_pillow["exif"])[1] == ["exif_rotated"]
    assert decode_image(needs_pillow["greyscale"])[1] == ["converted_L_to_RGB"]
