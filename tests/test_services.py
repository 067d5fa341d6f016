import pytest
from pymongo import MongoClient

from pipeline.services import airflow_connection_uri, embedded_mongo, mongo_uri, running_embedded_uri


def test_embedded_server_keeps_data_across_restarts(tmp_path):
    storage = tmp_path / "mongo"
    with embedded_mongo(storage) as uri:
        assert running_embedded_uri(storage) == uri
        with MongoClient(uri) as client:
            client.db.things.insert_one({"_id": 1, "kept": True})
    assert running_embedded_uri(storage) is None
    with embedded_mongo(storage) as uri, MongoClient(uri) as client:
        assert client.db.things.find_one({"_id": 1}) == {"_id": 1, "kept": True}


def test_configured_uri_starts_nothing(tmp_path):
    with mongo_uri("mongodb://db.example:27017", tmp_path / "mongo") as uri:
        assert uri == "mongodb://db.example:27017"
    assert not (tmp_path / "mongo").exists()


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("mongodb://127.0.0.1:1234/?directConnection=true", "mongo://127.0.0.1:1234/results?directConnection=true"),
        ("mongodb://user:pw@host:27017/admin", "mongo://user:pw@host:27017/results"),
        (
            "mongodb+srv://user:pw@cluster.example.net/?retryWrites=true",
            "mongo://user:pw@cluster.example.net/results?retryWrites=true&srv=true",
        ),
    ],
)
def test_airflow_connection_uri(uri, expected):
    assert airflow_connection_uri(uri, "results") == expected


def test_airflow_connection_uri_rejects_other_schemes():
    with pytest.raises(ValueError, match="not a MongoDB URI"):
        airflow_connection_uri("postgres://x", "db")
