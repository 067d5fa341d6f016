"""Uploads into the watched bucket: size cap, content sniffing, names that cannot escape."""

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.intake import UploadError, accept_upload, safe_name
from pipeline.media.images import encode_jpeg


def jpeg_bytes(*, seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8))


@given(st.text(max_size=300))
def test_safe_names_are_plain_file_names(name):
    cleaned = safe_name(name)
    assert cleaned and "/" not in cleaned and "\\" not in cleaned and not cleaned.startswith(".")
    assert len(cleaned) <= 120 and cleaned not in ("..", ".")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"), (".hidden.jpg", "hidden.jpg"),
     ("my holiday (1).jpg", "my_holiday_1_.jpg"), ("/", "upload"), ("ünïcode ✓.png", "ünïcode_.png")],
)  # fmt: skip
def test_safe_name_examples(name, expected):
    assert safe_name(name) == expected


def test_an_image_lands_at_the_top_of_the_bucket_and_never_overwrites(settings):
    incoming = settings.storage.incoming_uri.removeprefix("file://")
    first = accept_upload(settings, "../../outside.jpg", io.BytesIO(jpeg_bytes(seed=1)))
    assert first.uri.endswith("/outside.jpg") and first.kind == "image"
    assert first.uri.removeprefix("file://").startswith(incoming)
    second = accept_upload(settings, "outside.jpg", io.BytesIO(jpeg_bytes(seed=2)))
    assert second.uri.endswith(f"/{second.content_id[:12]}-outside.jpg")
    assert Path(first.uri.removeprefix("file://")).read_bytes() == jpeg_bytes(seed=1)


@pytest.mark.parametrize(
    ("payload", "status"), [(b"", 400), (b"just some text, renamed to .mp4", 415), (b"\xff\xd8\xff" * 400_000, 413)]
)
def test_refused_uploads_say_why_and_write_nothing(settings, payload, status):
    settings = settings.model_copy(update={"score": settings.score.model_copy(update={"max_upload_mb": 1})})
    with pytest.raises(UploadError) as refused:
        accept_upload(settings, "clip.mp4", io.BytesIO(payload))
    assert refused.value.status == status
    assert not list(settings.storage.root.parent.glob("incoming/*"))
