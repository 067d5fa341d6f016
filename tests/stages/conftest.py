"""A prepared dataset and a trained champion, shared by the stage tests that need a real model."""

from types import SimpleNamespace

import pytest

from pipeline.settings import get_settings
from pipeline.stages import prepare, train
from pipeline.store import ResultStore
from tests.conftest import isolate


@pytest.fixture(scope="package")
def world(tmp_path_factory, mongo_uri, synthetic_source):
    """One prepared dataset and one trained model, shared by this package's tests."""
    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = isolate(monkeypatch, root)
        store = ResultStore.from_uri(mongo_uri, database="e2e")
        prepare.run(settings, store, str(synthetic_source.root))
        yield SimpleNamespace(
            settings=settings, store=store, trained=train.run(settings, store), root=root, monkeypatch=monkeypatch
        )
        store.client.drop_database("e2e")
    get_settings.cache_clear()
