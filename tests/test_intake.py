"""Uploads into the watched bucket: size cap, content sniffing, names that cannot escape, no overwrite."""

import io
import os
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.intake import MAX_NAME_BYTES, UploadError, accept_upload, safe_name
from pipeline.media.images import encode_jpeg


def jpeg_bytes(*, seed: int) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8))


def bucket_of(settings) -> Path:
    return Path(settings.storage.incoming_uri.removeprefix("file://"))


def limited(settings, mb: int = 1):
    return settings.model_copy(update={"score": settings.score.model_copy(update={"max_upload_mb": mb})})


@given(st.text(max_size=1000))
def test_safe_names_are_plain_file_names_within_the_byte_cap(name):
    cleaned = safe_name(name)
    assert cleaned and "/" not in cleaned and "\\" not in cleaned and "\x00" not in cleaned
    assert not cleaned.startswith(".") and len(cleaned.encode()) <= MAX_NAME_BYTES


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "passwd"), ("/etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
     ("C:\\Users\\me\\x.jpg", "x.jpg"), (".hidden.jpg", "hidden.jpg"), ("..", "upload"), ("/", "upload"),
     ("a\x00b.jpg", "a_b.jpg"), ("my holiday (1).jpg", "my_holiday_1_.jpg"), ("ünïcode ✓.png", "ünïcode_.png"),
     ("<b onclick=x>hi</b>.jpg", "b_.jpg"), ("x" * 1000 + ".jpg", "x" * 196 + ".jpg"),
     ("日本" * 100 + ".jpg", "日本" * 32 + "日.jpg"), ("a." + "e" * 40, "a." + "e" * 40)],
)  # fmt: skip
def test_safe_name_examples(name, expected):
    assert safe_name(name) == expected


def test_an_image_lands_at_the_top_of_the_bucket_owner_only_and_never_overwrites(settings):
    first = accept_upload(settings, "../../outside.jpg", io.BytesIO(jpeg_bytes(seed=1)))
    assert first.uri == f"file://{bucket_of(settings)}/outside.jpg" and first.kind == "image"
    second = accept_upload(settings, "outside.jpg", io.BytesIO(jpeg_bytes(seed=2)))
    assert second.uri.endswith(f"/{second.content_id[:12]}-outside.jpg")
    assert (bucket_of(settings) / "outside.jpg").read_bytes() == jpeg_bytes(seed=1)
    assert stat.S_IMODE(os.stat(second.uri.removeprefix("file://")).st_mode) == 0o600
    with pytest.raises(UploadError) as taken:  # both names taken: refused, neither replaced
        accept_upload(settings, "outside.jpg", io.BytesIO(jpeg_bytes(seed=2)))
    assert taken.value.status == 409 and "rename" in str(taken.value)
    assert sorted(p.name for p in bucket_of(settings).iterdir()) == sorted(["outside.jpg", second.uri.rsplit("/")[-1]])


@pytest.mark.parametrize("name", ["日本語の名前" * 34 + ".jpg", "n" * 1000 + ".jpg"])
def test_long_and_multibyte_names_fit_the_file_system_even_with_a_prefix(settings, name):
    first = accept_upload(settings, name, io.BytesIO(jpeg_bytes(seed=1)))
    second = accept_upload(settings, name, io.BytesIO(jpeg_bytes(seed=2)))
    assert Path(first.uri.removeprefix("file://")).read_bytes() == jpeg_bytes(seed=1)
    assert Path(second.uri.removeprefix("file://")).read_bytes() == jpeg_bytes(seed=2)


@pytest.mark.parametrize("existing", ["dangling", "outside file"])
def test_a_link_of_the_same_name_is_never_followed_out_of_the_bucket(settings, tmp_path, existing):
    outside = tmp_path / "elsewhere" / "victim.jpg"
    outside.parent.mkdir()
    if existing == "outside file":
        outside.write_bytes(b"keep me")
    bucket_of(settings).mkdir(parents=True)
    (bucket_of(settings) / "victim.jpg").symlink_to(outside)
    accepted = accept_upload(settings, "victim.jpg", io.BytesIO(jpeg_bytes(seed=1)))
    assert accepted.uri == f"file://{bucket_of(settings)}/{accepted.content_id[:12]}-victim.jpg"
    assert (outside.read_bytes() == b"keep me") if existing == "outside file" else not outside.exists()
    assert (bucket_of(settings) / "victim.jpg").is_symlink()


class _HeldStream(io.BytesIO):
    """Content that, at its end, waits for the other upload to get there too: both then publish at once."""

    def __init__(self, data: bytes, barrier: threading.Barrier) -> None:
        super().__init__(data)
        self._barrier = barrier

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            self._barrier.wait(timeout=30)
        return chunk


@pytest.fixture
def eager_thread_switching():
    """Threads take turns every few bytecodes, so that a check-then-write race would show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_two_uploads_under_one_name_at_once_both_survive(settings, eager_thread_switching):
    for round_ in range(20):
        barrier = threading.Barrier(2)
        contents = [jpeg_bytes(seed=2 * round_), jpeg_bytes(seed=2 * round_ + 1)]
        with ThreadPoolExecutor(2) as pool:
            uploads = [pool.submit(accept_upload, settings, f"same-{round_}.jpg", _HeldStream(c, barrier))
                       for c in contents]  # fmt: skip
            accepted = [upload.result() for upload in uploads]
        assert accepted[0].uri != accepted[1].uri
        for content, result in zip(contents, accepted, strict=True):
            assert Path(result.uri.removeprefix("file://")).read_bytes() == content
    assert len(list(bucket_of(settings).iterdir())) == 40


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><script>alert(1)</script></svg>'
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
XPM = b'/* XPM */\nstatic char * x[] = {\n"2 2 1 1",\n"a c #000000",\n"aa",\n"aa"};\n'


@pytest.mark.parametrize(
    ("name", "payload", "status"),
    [("clip.mp4", b"", 400), ("clip.mp4", b"just some text, renamed to .mp4", 415), ("logo.jpg", SVG, 415),
     ("logo.png", b'<?xml version="1.0"?>\n' + SVG, 415), ("page.jpg", HTML, 415), ("page.gif", HTML, 415),
     ("icon.jpg", XPM, 415), ("big.jpg", b"\xff\xd8\xff" * 400_000, 413)],
)  # fmt: skip
def test_refused_uploads_say_why_and_leave_nothing_behind(settings, name, payload, status):
    settings = limited(settings)
    with pytest.raises(UploadError) as refused:
        accept_upload(settings, name, io.BytesIO(payload))
    assert refused.value.status == status
    assert list(bucket_of(settings).iterdir()) == []  # no object, and no hidden partial file either


def test_a_remote_bucket_names_each_content_by_its_id(settings, s3_bucket):
    settings = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"incoming_uri": f"s3://{s3_bucket.name}/incoming"})}
    )
    first = accept_upload(settings, "photo.jpg", io.BytesIO(jpeg_bytes(seed=1)))
    second = accept_upload(settings, "photo.jpg", io.BytesIO(jpeg_bytes(seed=2)))
    again = accept_upload(settings, "photo.jpg", io.BytesIO(jpeg_bytes(seed=1)))
    assert first.uri == again.uri == f"s3://{s3_bucket.name}/incoming/{first.content_id[:12]}-photo.jpg"
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    keys = {o["Key"]: s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=o["Key"])["Body"].read() for o in listed}
    assert keys == {
        f"incoming/{first.content_id[:12]}-photo.jpg": jpeg_bytes(seed=1),
        f"incoming/{second.content_id[:12]}-photo.jpg": jpeg_bytes(seed=2),
    }
    assert list((settings.storage.root / "spool").iterdir()) == []  # the local spool is cleaned up


def test_partial_uploads_abandoned_by_a_killed_process_are_removed_and_nothing_else(settings, store):
    import time

    from pipeline.intake import ABANDONED_AFTER_S, PARTIAL_PREFIX, remove_abandoned_uploads
    from pipeline.stages.score import survey

    bucket = Path(settings.storage.incoming_uri.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    old = time.time() - ABANDONED_AFTER_S - 60
    abandoned, in_progress = bucket / f"{PARTIAL_PREFIX}dead", bucket / f"{PARTIAL_PREFIX}live"
    dropped, hidden = bucket / "old-photo.jpg", bucket / ".user-notes"
    for path in (abandoned, in_progress, dropped, hidden):
        path.write_bytes(b"data")
    for path in (abandoned, dropped, hidden):
        os.utime(path, (old, old))
    assert remove_abandoned_uploads(settings.storage.incoming_uri, now=time.time()) == [str(abandoned)]
    assert sorted(p.name for p in bucket.iterdir()) == sorted(p.name for p in (in_progress, dropped, hidden))
    os.utime(in_progress, (old, old))
    survey(settings, store)  # every look at the watched bucket cleans up
    assert not in_progress.exists() and dropped.exists() and hidden.exists()
