"""prepare -> train -> score through the stage functions and the CLI, on real components."""

import os
import shutil
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from pipeline import bucket, tracking
from pipeline.cli import app
from pipeline.settings import get_settings
from pipeline.stages import score
from pipeline.store import TRAINING_RUNS, VERDICTS
from pipeline.synthetic import drop_incoming

pytestmark = pytest.mark.slow


def test_training_is_tracked_registered_and_recorded(world):
    settings, store, trained = world.settings, world.store, world.trained
    run = mlflow.get_run(trained["_id"])
    assert run.data.params["model.backbone"] == "efficientnet_lite0"
    assert {
        "test_accuracy",
        "test_roc_auc",
        "head_loss",
        "fine_tune_loss",
        "calibration_temperature",
        "val_media_auc_mean",
        "val_media_auc_topk_mean",
        "val_media_ood_accepted",
        "calibration_ood_threshold",
        "test_media_coverage",
        "test_media_confident_accuracy_without_abstention",
    } <= set(run.data.metrics)
    assert run.data.metrics["val_media_ood_accepted"] >= settings.model.ood_accept
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc_curve.png", "plots/reliability.png", "plots/confusion_matrix.png"} <= artifacts
    top_level = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"model_card.md", "model_card.json", "calibration.json"} <= top_level
    assert run.data.tags["dataset_id"] == trained["dataset_id"]
    champion = tracking.champion(settings)
    assert champion is not None and champion.version == trained["model"]["version"] and trained["promoted"]
    assert store.db[TRAINING_RUNS].find_one({"_id": trained["_id"]})["metrics"]["n"] > 0
    bundle = score.load_champion(settings).bundle
    assert (bundle.folder / "ood.npz").exists() and bundle.distribution.threshold == trained["ood"]["threshold"]
    assert set(bundle.distribution.profile.kinds) == {"image", "video"}  # the synthetic set has both
    assert 0 <= trained["trust"]["coverage"] <= 1 and trained["trust"]["media"] > 0


def test_scoring_writes_one_verdict_per_item_with_lineage(world):
    settings, store, trained = world.settings, world.store, world.trained
    incoming = world.root / "incoming"
    dropped = drop_incoming(incoming)
    results = score.run(settings, store)
    assert len(results) == len(dropped) == store.count(VERDICTS), (results, dropped)
    video = store.find_verdict(next(r["content_id"] for r in results if r["uri"].endswith("coffee-fake.mp4")))
    assert video["status"] == "scored" and video["verdict"] in ("real", "uncertain", "fake")
    assert len(video["frames"]) == video["frame_count"] == settings.prepare.frames_per_video
    assert video["model"]["run_id"] == trained["_id"] and video["config_hash"] == settings.config_hash()
    assert video["model"]["runtime"] == "onnxruntime"
    assert video["aggregation"] == trained["aggregation"] in ("mean", "topk_mean", "confident")
    assert 0 <= video["probability"] <= 1 and video["bands"]["real_below"] <= video["bands"]["fake_from"]
    assert video["input"] == {**video["input"], "kind": "video", "codec": "h264", "width": 192, "height": 192}
    assert video["ood"]["method"] == "knn" and video["ood_score"] == video["ood"]["score"]
    assert all(frame["ood_score"] is not None for frame in video["frames"])
    assert video["provenance"]["c2pa"] == {"state": "absent"} and video["basis"] == "model"
    assert video["explained"] == (video["verdict"] in ("fake", "uncertain"))
    bad = next(r for r in results if r["uri"].endswith("notes.mp4"))
    assert bad["status"] == "failed" and "not an image or video" in bad["reason"]

    shutil.copy(incoming / "coffee-fake.mp4", incoming / "renamed copy.mp4")
    assert score.unscored(settings, store) == []
    assert store.count(VERDICTS) == len(dropped)
    assert any(
        s.endswith("renamed%20copy.mp4") or s.endswith("renamed copy.mp4")
        for s in store.find_verdict(video["_id"])["sources"]
    )


def test_cli_scores_lists_and_shows_verdicts(world, mongo_uri, tmp_path):
    world.monkeypatch.setenv("MONGO_URI", mongo_uri)
    world.monkeypatch.setenv("MEDIACHECK_MONGO__DATABASE", world.store.db.name)
    get_settings.cache_clear()
    store = world.store
    store.db[VERDICTS].delete_many({})
    image = next(p for p in drop_incoming(tmp_path / "elsewhere") if p.name == "chelsea-fake.jpg")
    runner = CliRunner()
    scored = runner.invoke(app, ["score", str(image)])
    assert scored.exit_code == 0, scored.output
    assert "chelsea-fake.jpg" in scored.output
    again = runner.invoke(app, ["score", "--format", "csv", str(image)])
    assert again.exit_code == 0, again.output
    header, row = again.stdout.splitlines()
    assert header == "uri,content_id,status,verdict,probability,ood_score,reason"
    assert row.startswith(f"{image},") and ",already_scored," in row
    listed = runner.invoke(app, ["verdicts", "list"])
    assert listed.exit_code == 0 and "chelsea-fake.jpg" in listed.output
    content_id = store.list_verdicts()[0]["_id"]
    shown = runner.invoke(app, ["verdicts", "show", content_id[:10]])
    assert shown.exit_code == 0 and '"frames"' in shown.output and content_id in shown.output
    assert '"ood"' in shown.output and '"provenance"' in shown.output
    assert runner.invoke(app, ["verdicts", "list", "--outside"]).exit_code == 0
    wrong = runner.invoke(app, ["verdicts", "list", "--band", "Fake"])
    assert wrong.exit_code == 2 and "real" in wrong.output and "uncertain" in wrong.output


def test_provenance_that_declares_ai_decides_and_a_stripped_copy_falls_back_to_the_model(world, c2pa_sign, tmp_path):
    from PIL import Image, PngImagePlugin

    original = next(p for p in drop_incoming(tmp_path / "drop", seed=21) if p.name == "chelsea-real.jpg")
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(c2pa_sign(original.read_bytes(), "image/jpeg"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Model: sdxl")
    Image.open(original).save(tmp_path / "webui.png", pnginfo=info)
    loaded = score.load_champion(world.settings)
    verdicts = {
        path.name: world.store.find_verdict(
            score.score_uri(str(path), loaded, world.settings, world.store)["content_id"]
        )
        for path in (original, signed, tmp_path / "webui.png")
    }
    assert verdicts["chelsea-real.jpg"]["basis"] == "model"
    for name in ("signed.jpg", "webui.png"):
        declared = verdicts[name]
        assert (declared["verdict"], declared["basis"]) == ("fake", "provenance"), declared["reason"]
        assert declared["provenance"]["declares_ai"] and 0 <= declared["probability"] <= 1  # the model's score kept
        assert declared["model_verdict"] in ("real", "uncertain", "fake")
    assert "C2PA manifest signed by mediacheck test signer" in verdicts["signed.jpg"]["reason"]
    assert verdicts["signed.jpg"]["provenance"]["c2pa"]["state"] == "valid"
    assert "Stable Diffusion web UI" in verdicts["webui.png"]["reason"]


def test_every_model_has_a_card_in_mlflow_mongodb_the_cli_and_the_detections_view(world, mongo_uri):
    from fastapi.testclient import TestClient

    from pipeline.web.app import create_app

    card = world.trained["card"]
    assert card["model"]["version"] == world.trained["model"]["version"]
    assert card["training_data"]["media"]["train"]["real"]["image"] > 0
    assert card["abstention"]["threshold"] == world.trained["ood"]["threshold"]
    assert any("not solved" in limit for limit in card["limits"])
    assert any("do not name the generators" in limit for limit in card["limits"])  # the synthetic labels.csv has none
    world.monkeypatch.setenv("MONGO_URI", mongo_uri)
    world.monkeypatch.setenv("MEDIACHECK_MONGO__DATABASE", world.store.db.name)
    get_settings.cache_clear()
    printed = CliRunner().invoke(app, ["card"])
    assert printed.exit_code == 0, printed.output
    assert f"# Model card: mediacheck-detector v{card['model']['version']}" in printed.output
    assert "## Known limits" in printed.output
    client = TestClient(create_app(settings=lambda: world.settings, store=lambda: world.store))
    page = client.get(f"/models/{world.trained['_id']}/card")
    assert page.status_code == 200 and 'id="limits"' in page.text and "Test coverage" in page.text
    assert client.get(f"/api/models/{world.trained['_id']}/card").json()["model"] == card["model"]
    assert client.get("/models/unknown-run/card").status_code == 404


def test_scoring_from_an_s3_bucket(world, s3_bucket, tmp_path):
    storage = world.settings.storage.model_copy(update={"incoming_uri": f"s3://{s3_bucket.name}/incoming"})
    settings = world.settings.model_copy(update={"storage": storage})
    media = [p for p in drop_incoming(tmp_path, seed=5) if p.name != "notes.mp4"][-3:]
    for path in media:
        s3_bucket.client.upload_file(str(path), s3_bucket.name, f"incoming/{path.name}")
    results = score.run(settings, world.store)
    assert sorted(r["uri"] for r in results) == sorted(f"s3://{s3_bucket.name}/incoming/{p.name}" for p in media)
    assert all(r["status"] == "scored" for r in results), results
    assert score.unscored(settings, world.store) == []


def test_moving_originals_aside_and_skipping_known_objects(world, tmp_path):
    folder = tmp_path / "bucket"
    storage = world.settings.storage.model_copy(update={"incoming_uri": folder.as_uri()})
    after = world.settings.score.model_copy(update={"after_scoring": "move"})
    settings = world.settings.model_copy(update={"storage": storage, "score": after})
    dropped = drop_incoming(folder, seed=11)
    results = score.run(settings, world.store)
    assert sorted(p.name for p in (folder / ".processed").iterdir()) == sorted(p.name for p in dropped[:-1])
    assert [p.name for p in (folder / ".failed").iterdir()] == ["notes.mp4"]
    assert bucket.list_bucket(settings.storage.incoming_uri).objects == []
    assert any("/.processed/" in uri for uri in world.store.find_verdict(results[0]["content_id"])["sources"])

    shutil.copy(folder / ".processed" / "coffee-fake.mp4", folder / "same bytes again.mp4")
    assert score.unscored(settings, world.store) == []  # known content: linked and moved, not rescored
    assert (folder / ".processed" / "same bytes again.mp4").exists()

    shutil.copy(folder / ".processed" / "chelsea-real.jpg", folder / "coffee-fake.mp4")  # a name already used
    moved = score.run(settings, world.store)  # known content: moved aside, not rescored
    assert [(Path(r["uri"]).name, r["status"]) for r in moved] == [("coffee-fake.mp4", "already_scored")]
    processed = sorted(p.name for p in (folder / ".processed").iterdir())
    assert "coffee-fake.mp4" in processed and any(n.endswith("-coffee-fake.mp4") for n in processed)


def test_known_locations_are_skipped_without_rehashing(world, tmp_path):
    keep = world.settings.model_copy(
        update={"storage": world.settings.storage.model_copy(update={"incoming_uri": (tmp_path / "b").as_uri()})}
    )
    image = drop_incoming(tmp_path / "b", seed=12)[4]
    assert image.name == "chelsea-real.jpg"
    assert score.run(keep, world.store)[0]["status"] in ("scored", "already_scored")
    (tmp_path / "b" / "notes.mp4").unlink()
    seen = world.store.intake_record(image.as_uri())
    assert (seen["size"], seen["mtime"]) == (image.stat().st_size, image.stat().st_mtime)
    # Other bytes of the same size and time: only a listing that trusts the record (no re-read) misses them.
    stamp = image.stat()
    image.write_bytes(bytes(reversed(image.read_bytes())))
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert score.unscored(keep, world.store) == []


def test_champion_moves_only_to_a_version_that_beats_it_on_the_same_test_split(world):
    import pandas as pd

    from pipeline.stages.train import _promote_if_better

    settings = world.settings
    manifest = pd.read_parquet(world.store.dataset(world.trained["dataset_id"])["manifest_path"])
    champion = tracking.champion(settings)
    challenger = tracking.ModelRef(champion.name, champion.version, champion.run_id)  # same artefacts, new claim
    promoted, rule = _promote_if_better(settings, challenger, {"roc_auc": 0.0}, manifest)
    assert not promoted and "promote only if strictly higher" in rule
    promoted, rule = _promote_if_better(settings, challenger, {"roc_auc": 1.01}, manifest)
    assert promoted and f"champion v{champion.version} = " in rule
    assert tracking.champion(settings).version == champion.version
