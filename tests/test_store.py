from pipeline.store import MEDIA, VERDICTS


def _verdict(content_id: str, uri: str, verdict: str = "fake", version: str = "1") -> dict:
    return {
        "_id": content_id,
        "content_id": content_id,
        "source_uri": uri,
        "verdict": verdict,
        "model": {"version": version},
        "frames": [{"index": 0, "probability": 0.9}],
    }


def test_verdicts_are_upserted_by_content_and_link_every_location(store):
    store.ensure_indexes()
    store.record_verdict(_verdict("a" * 64, "file:///in/x.mp4"))
    store.record_verdict(_verdict("a" * 64, "file:///in/renamed.mp4"))
    store.link_source("a" * 64, "s3://bucket/x.mp4")
    assert store.count(VERDICTS) == 1
    assert store.find_verdict("a" * 64)["sources"] == [
        "file:///in/x.mp4",
        "file:///in/renamed.mp4",
        "s3://bucket/x.mp4",
    ]


def test_listing_filters_and_hides_frames(store):
    store.record_verdict(_verdict("a" * 64, "u1", "fake", "1"))
    store.record_verdict(_verdict("b" * 64, "u2", "real", "2"))
    assert [v["_id"][0] for v in store.list_verdicts()] == ["b", "a"]
    assert [v["_id"][0] for v in store.list_verdicts(verdict="fake")] == ["a"]
    assert [v["_id"][0] for v in store.list_verdicts(model_version="2")] == ["b"]
    assert all("frames" not in v for v in store.list_verdicts())


def test_prefix_lookup_must_be_unambiguous(store):
    store.record_verdict(_verdict("ab" + "0" * 62, "u1"))
    store.record_verdict(_verdict("ac" + "0" * 62, "u2"))
    assert store.find_verdict_by_prefix("ab")["source_uri"] == "u1"
    assert store.find_verdict_by_prefix("a") is None


def test_indexes_exist(store):
    store.ensure_indexes()
    names = {tuple(index["key"].keys()) for index in store.db[VERDICTS].list_indexes()}
    assert ("verdict", "created_at") in names and ("model.version", "created_at") in names
    store.record_media([{"content_id": "c" * 64, "uri": "u1"}])
    assert [tuple(index["key"]) for index in store.db[MEDIA].list_indexes()] == [("_id",)]  # inserts stay cheap


def test_verdicts_are_read_by_content_in_one_query_without_frames_or_images(store):
    for content_id in ("a" * 64, "b" * 64):
        store.record_verdict({"_id": content_id, "source_uri": f"/in/{content_id[0]}.jpg", "status": "scored",
                              "frames": [{"index": 0}], "evidence": [{"index": 0, "jpeg": b"\xff\xd8"}]})  # fmt: skip
    found = store.verdicts_by_id(["a" * 64, "c" * 64])
    assert list(found) == ["a" * 64] and "frames" not in found["a" * 64]
    assert found["a" * 64]["evidence"] == [{"index": 0}] and found["a" * 64]["sources"] == ["/in/a.jpg"]
