"""Session fixtures: a real MongoDB-wire server, generated media, and isolated settings."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.services import embedded_mongo
from pipeline.settings import PROJECT_ROOT, Settings, get_settings, load_settings
from pipeline.store import ResultStore

SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
TINY_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mongo_uri():
    """One real MongoDB-wire server (SecantusDB) for the whole session, on a free port."""
    with embedded_mongo(":memory:") as uri:
        yield uri


@pytest.fixture
def store(mongo_uri):
    """A store over a fresh database of the session server."""
    result = ResultStore.from_uri(mongo_uri, database=f"test_{uuid.uuid4().hex[:8]}")
    yield result
    result.client.drop_database(result.db.name)
    result.client.close()


def isolate(monkeypatch: pytest.MonkeyPatch, root: Path) -> Settings:
    """Point every setting at ``root`` with the tiny config; the cached global settings match."""
    monkeypatch.setenv("MEDIACHECK_CONFIG", str(TINY_CONFIG))
    monkeypatch.setenv("MEDIACHECK_STORAGE__ROOT", str(root / "data"))
    monkeypatch.setenv("MEDIACHECK_STORAGE__INCOMING_URI", (root / "incoming").as_uri())
    for name in ("MONGO_URI", "MLFLOW_TRACKING_URI", "DAGSHUB_USER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    return load_settings()


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Tiny settings rooted in a temporary folder."""
    yield isolate(monkeypatch, tmp_path)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory):
    """A small labelled synthetic set (images, videos, labels.csv), generated once."""
    from pipeline.synthetic import make_labelled_set

    return make_labelled_set(tmp_path_factory.mktemp("synthetic"), crops_per_photo=2, videos=2)


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATASETS} is absent")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's standalone server) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    from pipeline.services import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket; fsspec/s3fs reach the server through the standard AWS variables."""
    import boto3
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=bucket)
    yield SimpleNamespace(name=bucket, client=client)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def scored_verdicts(tmp_path_factory, mongo_uri):
    """Real verdicts from the score stage, by an untrained (weights: none) ONNX-served bundle.

    Enough for views and APIs over verdicts: real frames, scores, evidence and lineage
    without training a model.
    """
    import numpy as np

    from pipeline import tracking
    from pipeline.model.bundle import load_bundle, save_bundle
    from pipeline.model.calibration import Calibration
    from pipeline.model.train import build_classifier, serving_copy
    from pipeline.settings import ModelSettings
    from pipeline.stages import score
    from pipeline.synthetic import drop_incoming

    root = tmp_path_factory.mktemp("scored")
    model_settings = ModelSettings(backbone="efficientnet_lite0", weights="none", image_size=32)
    model = serving_copy(build_classifier(model_settings, frame_size=64), model_settings)
    metadata = {
        "frame_size": 64,
        "resize_policy": "letterbox",
        "frames_per_video": 6,
        "aggregation": "mean",
        "dataset_id": "ds-test",
    }
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3)).astype(np.float32)
    bundle = load_bundle(
        save_bundle(root / "bundle", model, Calibration(real_below=0.3, fake_from=0.7), metadata, check_frames=frames)
    )
    loaded = score.LoadedModel(bundle, tracking.ModelRef("mediacheck-detector", "1", "run-untrained"))
    settings = load_settings(storage={"root": root / "data", "incoming_uri": (root / "incoming").as_uri()})
    store = ResultStore.from_uri(mongo_uri, database="scored_verdicts")
    dropped = drop_incoming(root / "incoming")
    results = [score.score_uri(path.as_uri(), loaded, settings, store) for path in dropped]
    yield SimpleNamespace(store=store, results=results, database="scored_verdicts", dropped=dropped)
    store.client.drop_database("scored_verdicts")
