"""Listing and reading the watched bucket: no entry can hang, break or slip through the listing."""

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipeline import bucket
from pipeline.stages import score


def _names(uris: list[str], root: Path) -> list[str]:
    return sorted(uri.removeprefix("file://" + str(root) + "/") for uri in uris)


@pytest.mark.timeout(30)  # a FIFO opened for reading would block here forever
def test_a_listing_reports_what_cannot_be_media_and_never_opens_it(tmp_path):
    root = tmp_path / "bucket"
    (root / "sub").mkdir(parents=True)
    (root / "clip.mp4").write_bytes(b"v" * 10)
    (root / "sub" / "photo.jpg").write_bytes(b"p")
    (root / "inside.jpg").symlink_to(root / "sub" / "photo.jpg")
    os.mkfifo(root / "pipe.mp4")
    (root / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "zero.mp4").symlink_to("/dev/zero")
    (tmp_path / "outside.jpg").write_bytes(b"o")
    (root / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "linked-folder").symlink_to(tmp_path)
    (root / ".partial.jpg").write_bytes(b"h")
    (root / ".processed").mkdir()
    (root / ".processed" / "done.jpg").write_bytes(b"d")
    (root / "labels.csv").write_text("file,label\n")
    (root / "NOTES.TXT").write_text("hello")

    listing = bucket.list_bucket(root.as_uri())

    assert _names([o.uri for o in listing.objects], root) == ["clip.mp4", "inside.jpg", "sub/photo.jpg"]
    assert dict(zip(_names([s.uri for s in listing.skipped], root), [s.reason for s in sorted(
        listing.skipped, key=lambda s: s.uri)], strict=True)) == {
        "gone.jpg": "dangling symbolic link",
        "linked-folder": "link to a folder (not followed)",
        "out.jpg": "symbolic link out of the bucket (not followed)",
        "pipe.mp4": "not a regular file (a FIFO)",
        "zero.mp4": "symbolic link out of the bucket (not followed)",
    }  # fmt: skip
    assert _names(listing.sidecars, root) == ["NOTES.TXT", "labels.csv"]


def test_a_local_object_is_hashed_in_place_in_chunks_and_a_change_while_reading_is_noticed(tmp_path):
    path = tmp_path / "clip.mp4"
    data = os.urandom(3 * bucket.CHUNK_BYTES + 17)
    path.write_bytes(data)
    obj = bucket.stat_object(path.as_uri())
    with bucket.materialised(obj, max_bytes=len(data), spool_dir=tmp_path / "spool") as item:
        assert item.content_id == hashlib.sha256(data).hexdigest() and item.path == path
    with bucket.materialised(obj, max_bytes=len(data) - 1, spool_dir=tmp_path / "spool") as item:
        assert item.path is None and item.content_id == hashlib.sha256(data).hexdigest()  # over the limit: hashed only
    assert not (tmp_path / "spool").exists()  # nothing is copied for a local bucket

    with path.open("ab") as handle:
        handle.write(b"more")  # the copy went on after the listing
    with pytest.raises(bucket.StillWriting), bucket.materialised(obj, max_bytes=10**9, spool_dir=tmp_path):
        pass
    path.unlink()
    with (
        pytest.raises(bucket.ObjectError, match="vanished"),
        bucket.materialised(obj, max_bytes=10**9, spool_dir=tmp_path),
    ):
        pass


@pytest.mark.timeout(30)
def test_a_fifo_swapped_in_after_the_listing_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "late.mp4"
    os.mkfifo(fifo)
    obj = bucket.BucketObject(fifo.as_uri(), 0, fifo.stat().st_mtime)
    with pytest.raises(bucket.ObjectError, match="FIFO"), bucket.materialised(obj, max_bytes=10, spool_dir=tmp_path):
        pass


def test_a_remote_object_is_spooled_while_hashed_and_the_spool_removed(s3_bucket, tmp_path):
    data = os.urandom(2 * bucket.CHUNK_BYTES + 3)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="incoming/clip.mp4", Body=data)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="incoming/labels.csv", Body=b"a,b")
    listing = bucket.list_bucket(f"s3://{s3_bucket.name}/incoming")
    (obj,) = listing.objects
    assert obj.uri == f"s3://{s3_bucket.name}/incoming/clip.mp4" and obj.size == len(data) and obj.mtime > 0
    assert listing.sidecars == [f"s3://{s3_bucket.name}/incoming/labels.csv"]
    spool = tmp_path / "spool"
    with bucket.materialised(obj, max_bytes=len(data), spool_dir=spool) as item:
        assert item.path.parent == spool and item.path.read_bytes() == data
        assert item.content_id == hashlib.sha256(data).hexdigest()
    with bucket.materialised(obj, max_bytes=1024, spool_dir=spool) as item:
        assert item.path is None and item.content_id == hashlib.sha256(data).hexdigest()
    assert list(spool.iterdir()) == []


def test_objects_settle_once_unchanged_for_the_settle_period():
    old, fresh = bucket.BucketObject("a", 1, 100.0), bucket.BucketObject("b", 1, 108.0)
    future = bucket.BucketObject("c", 1, 200.0)  # a clock ahead of ours: not settled either
    assert bucket.settled([old, fresh, future], settle_s=5, now=110.0) == ([old], [fresh, future])


_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=30)
_ENTRY = st.tuples(
    _NAME.filter(lambda n: n not in (".", "..") and len(n.encode()) < 200),
    st.sampled_from(["file", "file", "sidecar", "fifo", "dangling", "link_out", "folder_link"]),
    st.binary(max_size=300),
)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(_ENTRY, max_size=10, unique_by=lambda e: e[0].casefold()))
def test_every_entry_of_any_bucket_is_accounted_for_through_listing_and_intake(entries, settings, store):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "bucket"
        root.mkdir()
        made = {}
        for name, kind, content in entries:
            path = root / (name + ".csv" if kind == "sidecar" else name)
            if kind in ("file", "sidecar"):
                path.write_bytes(content)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "dangling":
                path.symlink_to(Path(folder) / "missing")
            elif kind == "link_out":
                path.symlink_to("/dev/zero")
            else:
                path.symlink_to(folder, target_is_directory=True)
            if not path.name.startswith("."):
                made["file://" + str(path)] = (kind, content)

        found = score.survey(settings, store, source=root.as_uri(), settle_s=0)

        accounted = found.new + [s.uri for s in found.skipped] + found.sidecars
        assert sorted(accounted) == sorted(made)  # each entry exactly once; hidden ones never
        assert found.waiting == []
        for uri in found.new:
            kind, content = made[uri]
            assert kind == "file"
            obj = bucket.stat_object(uri)
            with bucket.materialised(obj, max_bytes=10**6, spool_dir=Path(folder) / "spool") as item:
                assert item.content_id == hashlib.sha256(content).hexdigest()
        for skipped in found.skipped:
            assert made[skipped.uri][0] in ("fifo", "dangling", "link_out", "folder_link")
            assert store.intake_record(skipped.uri)["reason"] == skipped.reason
