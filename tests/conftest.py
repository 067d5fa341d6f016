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
    """Real verdicts from the score stage, by an ONNX-served bundle with an untrained head.

    Enough for views and APIs over verdicts: real frames, scores, out-of-distribution checks
    (ImageNet features, fitted on crops of the photographs the dropped media show), evidence
    and lineage, without training a model.
    """
    import keras
    import numpy as np

    from pipeline import tracking
    from pipeline.media.stats import MediaStats
    from pipeline.model.bundle import ModelBundle, load_bundle, save_bundle
    from pipeline.model.calibration import Calibration
    from pipeline.model.onnx_export import EMBEDDING, keras_outputs
    from pipeline.model.ood import fit_distribution
    from pipeline.model.train import build_classifier, serving_copy
    from pipeline.settings import ModelSettings
    from pipeline.stages import score
    from pipeline.synthetic import PHOTOS, drop_incoming, photo, random_crop

    root = tmp_path_factory.mktemp("scored")
    keras.utils.set_random_seed(0)  # the untrained head: the same verdicts on every run
    model_settings = ModelSettings(backbone="efficientnet_lite0", weights="imagenet", image_size=64)
    model = serving_copy(build_classifier(model_settings, frame_size=64), model_settings)
    metadata = {
        "frame_size": 64,
        "resize_policy": "letterbox",
        "frames_per_video": 6,
        "aggregation": "mean",
        "dataset_id": "ds-test",
    }
    rng = np.random.default_rng(0)
    framing = ModelBundle(root, Calibration(), metadata)
    crops = np.stack([score.model_frame(random_crop(photo(name), rng), framing) for name in PHOTOS * 4])
    embeddings = keras_outputs(model, crops.astype(np.float32))[EMBEDDING]
    seen = [MediaStats("image", 192, 192, "jpeg"), MediaStats("video", 192, 192, "h264", 12.0, 2.0)]
    distribution, _ = fit_distribution("knn", embeddings[14:], np.arange(len(crops) - 14) % 2,
                                       [embeddings[i : i + 1] for i in range(14)], seen, accept=0.95)  # fmt: skip
    bundle = load_bundle(save_bundle(root / "bundle", model, Calibration(real_below=0.3, fake_from=0.7), metadata,
                                     check_frames=crops[:2].astype(np.float32), distribution=distribution))  # fmt: skip
    loaded = score.LoadedModel(bundle, tracking.ModelRef("mediacheck-detector", "1", "run-untrained"))
    settings = load_settings(
        storage={"root": root / "data", "incoming_uri": (root / "incoming").as_uri()}, score={"settle_s": 0}
    )
    store = ResultStore.from_uri(mongo_uri, database="scored_verdicts")
    dropped = drop_incoming(root / "incoming")
    results = [score.score_uri(path.as_uri(), loaded, settings, store) for path in dropped]
    yield SimpleNamespace(
        store=store, results=results, database="scored_verdicts", dropped=dropped, bundle=bundle, settings=settings
    )
    store.client.drop_database("scored_verdicts")


@pytest.fixture(scope="session")
def c2pa_sign():
    """``sign(data, mime, source_type) -> bytes``: a C2PA manifest signed by a test certificate chain.

    The signer needs a chain, not a bare self-signed leaf: a test CA, and a leaf with
    digitalSignature, emailProtection and both key identifiers (see ../shared/NOTES.md).
    """
    import datetime
    import io

    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mediacheck tests")])  # fmt: skip

    def usage(*, signs_certificates: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=signs_certificates,
                             crl_sign=signs_certificates, encipher_only=False, decipher_only=False)  # fmt: skip

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject: str, public_key, *, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("mediacheck test CA"))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage(signs_certificates=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )  # fmt: skip

    authority = certificate("mediacheck test CA", ca_key.public_key(), ca=True).sign(ca_key, hashes.SHA256())
    leaf = (
        certificate("mediacheck test signer", key.public_key(), ca=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, authority))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip

    def sign(data: bytes, mime: str, source_type: str = "trainedAlgorithmicMedia") -> bytes:
        manifest = {
            "claim_generator_info": [{"name": "mediacheck-test-generator", "version": "1.0"}],
            "title": "generated in a test",
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}",
            }]}}],
        }  # fmt: skip
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, private, None))
        signed = io.BytesIO()
        c2pa.Builder(manifest).sign(signer, mime, io.BytesIO(data), signed)
        return signed.getvalue()

    return sign
