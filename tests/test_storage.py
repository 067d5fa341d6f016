"""Publishing files under a URI root and fetching them back, on a real S3-compatible server."""

from pathlib import Path

from upath import UPath

from pipeline import storage


def _folder(root: Path) -> dict[str, bytes]:
    files = {"ab/ab12_0000.jpg": b"first frame", "ab/ab12_0001.jpg": b"second", "cd/cd34_0000.jpg": b"an image"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_published_files_come_back_whole_and_are_fetched_once(s3_bucket, tmp_path, monkeypatch):
    files = _folder(tmp_path / "written")
    destination = UPath(f"s3://{s3_bucket.name}/root/frames/full-letterbox-128")
    uris = storage.publish(tmp_path / "written", destination)
    assert sorted(uris.values()) == sorted(f"{destination}/{name}" for name in files)
    keys = [o["Key"] for o in s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert sorted(keys) == sorted(f"root/frames/full-letterbox-128/{name}" for name in files)

    monkeypatch.setattr(storage, "FETCH_CHUNK", 2)
    reports = []
    wanted = [*uris.values(), next(iter(uris.values())), "/elsewhere/local.jpg"]  # a repeat, and a local path
    cache = tmp_path / "cache"
    local = storage.local_copies(wanted, cache, on_progress=lambda done, total: reports.append((done, total)))
    assert reports == [(2, 3), (3, 3)]  # each file once, reported chunk by chunk
    assert local[-1] == "/elsewhere/local.jpg" and local[0] == local[3]
    for uri, path in zip(wanted[:3], local, strict=False):
        assert path.startswith(str(cache / "s3" / s3_bucket.name)) and uri.endswith(path.split("/root/", 1)[1])
        assert Path(path).read_bytes() == files[uri.split("full-letterbox-128/", 1)[1]]
    assert [p.name for p in cache.iterdir()] == ["s3"]  # no staging folder left behind

    s3_bucket.client.delete_objects(Bucket=s3_bucket.name, Delete={"Objects": [{"Key": k} for k in keys]})
    reports.clear()
    assert storage.local_copies(wanted, cache, on_progress=lambda *report: reports.append(report)) == local
    assert reports == []  # served from the cache: the bucket is not read again


def test_local_paths_are_left_alone(tmp_path):
    paths = [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert storage.local_copies(paths, tmp_path / "cache") == paths
    assert not (tmp_path / "cache").exists()
    assert storage.publish(tmp_path, UPath("memory://empty")) == {}
