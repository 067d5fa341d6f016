import os

from pipeline import tracking
from pipeline.settings import load_settings


def test_dagshub_is_off_by_default(settings, monkeypatch):
    assert not tracking.dagshub_enabled(settings)
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "token")
    assert not tracking.dagshub_enabled(settings)  # a token alone is not an opt-in
    opted_in = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"dagshub_repo": "o/r"})})
    assert tracking.dagshub_enabled(opted_in)


def test_default_store_is_sqlite_under_the_storage_root(settings):
    uri = tracking.configure(settings)
    assert uri == f"sqlite:///{settings.storage.root / 'mlflow.db'}"
    assert (settings.storage.root / "mlflow.db").exists()
    assert tracking.champion(settings) is None


def test_configuring_leaves_no_tracking_uri_behind_for_later_settings(settings, tmp_path):
    tracking.configure(settings)  # mlflow.set_tracking_uri alone would export MLFLOW_TRACKING_URI
    other = load_settings(storage={"root": tmp_path / "other", "incoming_uri": (tmp_path / "in").as_uri()})
    assert other.mlflow_uri == f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    assert tracking.configure(other) == other.mlflow_uri


def test_a_user_tracking_uri_in_the_environment_is_kept(settings, monkeypatch, tmp_path):
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    assert tracking.configure(settings) == settings.mlflow_uri  # the settings object was built before
    assert os.environ["MLFLOW_TRACKING_URI"] == mine
    assert load_settings().mlflow_uri == mine
