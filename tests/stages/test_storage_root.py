"""prepare -> train -> score on three "hosts" that share only an s3:// storage root (and MongoDB)."""

import pandas as pd
import pytest
from upath import UPath

from pipeline.settings import load_settings
from pipeline.stages import prepare, score, train
from pipeline.synthetic import drop_incoming

pytestmark = pytest.mark.slow


def test_tasks_on_different_hosts_hand_everything_on_through_an_s3_root(
    settings, store, synthetic_source, s3_bucket, monkeypatch, tmp_path
):
    root = f"s3://{s3_bucket.name}/mediacheck"
    monkeypatch.setenv("MEDIACHECK_STORAGE__ROOT", root)
    monkeypatch.setenv("MEDIACHECK_STORAGE__INCOMING_URI", f"s3://{s3_bucket.name}/incoming")

    def host(name: str):
        """Settings of a worker whose own state lives in a folder no other worker sees."""
        monkeypatch.setenv("MEDIACHECK_STORAGE__LOCAL_ROOT", str(tmp_path / name))
        return load_settings()

    planner, extractor, assembler = host("planner"), host("extractor"), host("assembler")
    work = prepare.plan(planner, str(synthetic_source.root))
    assert work["workdir"].startswith(f"{root}/runs/prepare-")
    for video in work["videos"]:  # the DAG's mapped tasks, each on its own worker
        prepare.process_batch(extractor, store, work["workdir"], [video])
    for chunk in work["image_chunks"]:
        prepare.process_batch(host("images"), store, work["workdir"], prepare.load_chunk(chunk))
    summary = prepare.assemble(assembler, store, work["workdir"], str(synthetic_source.root))

    assert summary["manifest"] == f"{root}/datasets/{summary['dataset_id']}/manifest.parquet"
    with UPath(summary["manifest"]).open("rb") as handle:
        manifest = pd.read_parquet(handle)
    keys = {o["Key"] for page in s3_bucket.client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket.name)
            for o in page.get("Contents", [])}  # fmt: skip
    assert manifest["frame_path"].str.startswith(f"{root}/frames/full-letterbox-128/").all()
    assert {p.removeprefix(f"s3://{s3_bucket.name}/") for p in manifest["frame_path"]} <= keys
    assert (manifest["kind"] == "video").any() and (manifest["kind"] == "image").any()
    assert not list(tmp_path.rglob("*.jpg"))  # every frame went to the bucket, no local copy stayed

    trainer = host("trainer")  # sees nothing prepare wrote but the bucket
    trained = train.run(trainer, store)
    assert trained["dataset_id"] == summary["dataset_id"] and trained["promoted"]
    fetched = list((trainer.storage.local_root / "cache" / "frames" / "s3" / s3_bucket.name).rglob("*.jpg"))
    assert len(fetched) == manifest["frame_path"].nunique()
    assert (trainer.storage.local_root / "mlflow.db").exists()  # the embedded MLflow default stays host-local

    for path in drop_incoming(tmp_path / "drop")[2:5]:  # a real and a fake video, a real image
        s3_bucket.client.upload_file(str(path), s3_bucket.name, f"incoming/{path.name}")
    results = score.run(trainer, store)
    assert len(results) == 3 and all(r["status"] == "scored" for r in results), results
    verdict = store.find_verdict(results[0]["content_id"])
    assert verdict["model"]["version"] == trained["model"]["version"] and 0 <= verdict["probability"] <= 1
