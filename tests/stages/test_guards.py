"""Datasets that cannot train or evaluate a model stop prepare and train with what to change;
a model without a test AUC is never promoted."""

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.prepare.sources import PrepareError
from pipeline.settings import PROJECT_ROOT
from pipeline.stages import prepare, train
from pipeline.store import DATASETS
from tests.conftest import TINY_CONFIG
from tests.prepare.test_dataset import noise_jpeg


def _class_folders(root, real: int, fake: int):
    """``real/`` and ``fake/`` folders of distinct small images, one group each."""
    for name, count, offset in (("real", real, 0), ("fake", fake, 1000)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            (root / name / f"{i}.jpg").write_bytes(noise_jpeg(offset + i))
    return root


def test_a_dataset_that_keeps_nothing_stops_prepare_and_is_not_recorded(settings, store, tmp_path):
    kept = prepare.run(settings, store, str(_class_folders(tmp_path / "good", 3, 3)))
    bad = tmp_path / "bad"
    (bad / "fake").mkdir(parents=True)
    for i in range(3):
        (bad / "fake" / f"{i}.jpg").write_bytes(b"")
    (bad / "notes").mkdir()
    (bad / "notes" / "readme.jpg").write_bytes(noise_jpeg(1))
    with pytest.raises(PrepareError) as error:
        prepare.run(settings, store, str(bad))
    assert str(error.value).startswith(
        "no media kept: all 4 file(s) of the source were refused: empty file (0 bytes) (3 files); "
        "no label: no enclosing folder names a class"
    )
    assert str(error.value).endswith("Fix what these reasons name and run prepare again; no dataset was recorded")
    assert store.count(DATASETS) == 1 and store.latest_dataset()["_id"] == kept["dataset_id"]  # train takes this one


def test_an_empty_source_says_where_media_go(settings, store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match=r"the source holds no files: put images or videos in class folders"):
        prepare.run(settings, store, str(tmp_path / "empty"))
    with pytest.raises(train.NoDatasetError):
        train.resolve_dataset(store, None)


def test_too_few_groups_of_a_class_stop_prepare_with_how_many_to_add(settings, store, tmp_path):
    with pytest.raises(PrepareError) as error:
        prepare.run(settings, store, str(_class_folders(tmp_path / "src", 5, 2)))
    assert str(error.value) == (
        "cannot split the dataset: test has no fake media. To fix it, fake media fall in only 2 group(s), and a "
        "group goes whole into one split: add fake media from at least 1 more group(s) (other source videos, scenes "
        "or people; labels.csv's group column names them, else each file and its near-duplicates are one group). "
        "No dataset was recorded"
    )
    assert store.count(DATASETS) == 0


def test_a_test_folder_without_a_class_stops_prepare(settings, store, tmp_path):
    source = tmp_path / "src"
    _class_folders(source / "train", 4, 4)
    _class_folders(source / "test", 2, 0)
    with pytest.raises(PrepareError) as error:
        prepare.run(settings, store, str(source))
    assert "cannot split the dataset: test has no fake media. To fix it, the source's split folders" in str(error.value)
    assert "add fake media there, or drop the split folders/column and let prepare split by group" in str(error.value)
    assert store.count(DATASETS) == 0


def test_train_refuses_a_recorded_dataset_that_lacks_a_class(settings, store, tmp_path):
    """Datasets recorded before prepare checked its split (the shared clips put no fake in test) are refused."""
    summary = prepare.run(settings, store, str(_class_folders(tmp_path / "src", 4, 4)))
    manifest = pd.read_parquet(summary["manifest"])
    legacy = tmp_path / "legacy.parquet"
    manifest[(manifest["split"] != "test") | (manifest["label"] == 0)].to_parquet(legacy)
    recorded = {k: v for k, v in store.dataset(summary["dataset_id"]).items() if k != "created_at"}
    document = recorded | {"_id": "ds-legacy", "manifest_path": str(legacy)}
    store.record_dataset(document, [])
    with pytest.raises(PrepareError) as error:
        train.run(settings, store, dataset_id="ds-legacy")
    assert str(error.value).startswith(
        f"dataset ds-legacy cannot be trained and evaluated: test has no fake media. Run prepare on its source "
        f"({tmp_path / 'src'}) again"
    )
    tracking.configure(settings)
    assert mlflow.search_runs(search_all_experiments=True).empty  # stopped before any training run


def _registered_version(settings) -> tracking.ModelRef:
    """A real registered version in the settings' MLflow store (a bundle-shaped artifact, no model)."""
    tracking.configure(settings)
    with mlflow.start_run() as run:
        mlflow.log_text("weights", f"{tracking.BUNDLE_PATH}/model.txt")
    client, name = mlflow.MlflowClient(), settings.mlflow.registered_model
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/{tracking.BUNDLE_PATH}"
    version = client.create_model_version(name, source, run_id=run.info.run_id)
    return tracking.ModelRef(name, str(version.version), run.info.run_id)


def test_a_model_without_a_test_auc_is_never_promoted(settings):
    test_rows = pd.DataFrame({"split": ["test"] * 4 + ["train"] * 2, "label": [0, 0, 0, 0, 0, 1],
                              "content_id": ["a", "a", "b", "c", "d", "e"]})  # fmt: skip
    first = _registered_version(settings)
    promoted, rule = train._promote_if_better(settings, first, {"accuracy": 1.0}, test_rows)
    assert not promoted and tracking.champion(settings) is None  # not even as the first model
    assert rule == (
        "v1 has no test roc_auc: its test split holds 3 real and 0 fake media, and a model is never promoted "
        "without a test roc_auc; the champion stays as it was"
    )
    tracking.promote(first, reason="promoted by the test")
    second = _registered_version(settings)
    promoted, rule = train._promote_if_better(settings, second, {"roc_auc": float("nan")}, test_rows)
    assert not promoted and rule.startswith("v2 has no test roc_auc")
    assert tracking.champion(settings).version == first.version


def test_the_cli_prints_the_reason_and_exits_2_without_a_traceback(settings, store, mongo_uri, tmp_path):
    source = _class_folders(tmp_path / "src", 4, 0)
    environment = os.environ | {
        "MEDIACHECK_CONFIG": str(TINY_CONFIG),
        "MEDIACHECK_STORAGE__ROOT": str(settings.storage.root),
        "MONGO_URI": mongo_uri,
        "MEDIACHECK_MONGO__DATABASE": store.db.name,
    }
    done = subprocess.run([sys.executable, "-m", "pipeline", "prepare", str(source)], cwd=PROJECT_ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, output
    assert "cannot split the dataset: train has no fake media, val has no fake media, test has no fake media" in output
    assert "the source has no fake media at all: add some (fake/ folders or fake rows)" in output
    assert "Traceback" not in output and store.count(DATASETS) == 0
