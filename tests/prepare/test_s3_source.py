"""Preparing straight from an s3:// source on a real S3-compatible server."""

import hashlib

import pandas as pd

from pipeline.stages import prepare


def test_prepare_from_s3(settings, store, synthetic_source, s3_bucket):
    rows = synthetic_source.labels_csv.read_text().splitlines()
    kept = [rows[0]] + [r for r in rows[1:] if "astronaut" in r or "chelsea" in r]
    for row in kept[1:]:
        name = row.split(",")[0]
        s3_bucket.client.upload_file(str(synthetic_source.root / name), s3_bucket.name, f"set/{name}")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="set/labels.csv", Body="\n".join(kept).encode())

    summary = prepare.run(settings, store, f"s3://{s3_bucket.name}/set")
    manifest = pd.read_parquet(summary["manifest"])
    assert summary["kept"] == len(kept) - 1 and summary["quarantined"] == 0
    assert manifest["source_uri"].str.startswith(f"s3://{s3_bucket.name}/set/").all()
    assert (manifest["kind"] == "video").any()  # videos are fetched to a temporary file for FFmpeg
    for row in manifest.drop_duplicates("content_id").itertuples():  # hashed while spooled, in chunks
        name = row.source_uri.removeprefix(f"s3://{s3_bucket.name}/set/")
        assert row.content_id == hashlib.sha256((synthetic_source.root / name).read_bytes()).hexdigest()
    assert not [p for p in settings.storage.root.rglob("spool-*")]  # every spooled copy was removed
