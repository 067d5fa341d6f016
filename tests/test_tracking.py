from pipeline import tracking


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
