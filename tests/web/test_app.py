"""The Detections app over real verdicts: pages, evidence images, plots, JSON API and uploads."""

import io

import pytest
from fastapi.testclient import TestClient

from pipeline import tracking
from pipeline.settings import load_settings
from pipeline.stages import score
from pipeline.web.app import create_app

pytestmark = pytest.mark.slow


@pytest.fixture
def client(scored_verdicts, tmp_path):
    settings = load_settings(
        storage={"root": tmp_path / "data", "incoming_uri": (tmp_path / "bucket").as_uri()}, score={"max_upload_mb": 1}
    )
    app = create_app(settings=lambda: settings, store=lambda: scored_verdicts.store,
                     run_url=lambda run_id: f"http://mlflow.example/runs/{run_id}")  # fmt: skip
    return TestClient(app)


def _video(scored_verdicts):
    return next(r for r in scored_verdicts.results if r["uri"].endswith("coffee-fake.mp4"))


def test_list_page_shows_every_verdict_with_its_band(client, scored_verdicts):
    page = client.get("/")
    assert page.status_code == 200
    for result in scored_verdicts.results:
        assert result["content_id"] in page.text
    assert "coffee-fake.mp4" in page.text
    assert 'class="band band-failed"' in page.text and "not an image or video" in page.text  # text renamed .mp4
    assert "media/" in page.text and 'src="/' not in page.text  # relative links only


def test_filters_by_band_and_model_version(client, scored_verdicts):
    video = _video(scored_verdicts)
    only_band = client.get("/api/verdicts", params={"band": video["verdict"]}).json()
    assert only_band and {row["verdict"] for row in only_band} == {video["verdict"]}
    assert client.get("/api/verdicts", params={"model_version": "1"}).json()
    assert client.get("/api/verdicts", params={"model_version": "99"}).json() == []
    assert client.get("/api/verdicts", params={"band": "bogus"}).status_code == 422


def test_detail_page_has_plot_evidence_and_lineage(client, scored_verdicts):
    video = _video(scored_verdicts)
    page = client.get(f"/media/{video['content_id'][:16]}/")
    assert page.status_code == 200
    assert "http://mlflow.example/runs/run-untrained" in page.text and "ds-test" in page.text
    detail = client.get(f"/api/verdicts/{video['content_id']}").json()
    assert len(detail["frames"]) == detail["frame_count"] == 6
    evidence = detail["evidence"]
    assert len(evidence) == 3 and all("jpeg" not in e for e in evidence)
    assert [e["probability"] for e in evidence] == sorted((f["probability"] for f in detail["frames"]), reverse=True)[
        :3
    ]
    frame = client.get(f"/media/{video['content_id']}/frames/{evidence[0]['index']}.jpg")
    assert frame.status_code == 200 and frame.content[:3] == b"\xff\xd8\xff"
    plot = client.get(f"/media/{video['content_id']}/scores.png")
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/media/0000/").status_code == 404
    assert client.get(f"/media/{video['content_id']}/frames/999.jpg").status_code == 404


def _named(scored_verdicts, name):
    return next(r for r in scored_verdicts.results if r["uri"].endswith(name))


def test_abstentions_are_badged_filtered_and_explained(client, scored_verdicts):
    chart = _named(scored_verdicts, "chart.jpg")  # a rendered chart: unlike the photographs the checks were fitted on
    assert chart["verdict"] == "uncertain" and chart["reason"] == "outside the training distribution"
    listing = client.get("/").text
    assert listing.count("outside training data</span>") == 1
    only = client.get("/api/verdicts", params={"outside": "true"}).json()
    assert [row["content_id"] for row in only] == [chart["content_id"]] and only[0]["outside"] is True
    assert "chart.jpg" in client.get("/", params={"outside": "true"}).text
    page = client.get(f"/media/{chart['content_id']}/").text
    assert 'id="outside-badge"' in page and "The model abstained" in page and "features: knn score" in page
    detail = client.get(f"/api/verdicts/{chart['content_id']}").json()
    assert detail["ood"]["outside"] and detail["ood_score"] > detail["ood"]["threshold"]
    assert detail["model_verdict"] in ("real", "uncertain", "fake") and detail["basis"] == "model"
    assert all(frame["ood_score"] is not None for frame in detail["frames"])
    assert detail["provenance"]["c2pa"] == {"state": "absent"} and detail["input"]["codec"] == "jpeg"


def test_fake_and_uncertain_verdicts_show_grad_cam_beside_their_frames(client, scored_verdicts):
    for result in scored_verdicts.results:
        if result["status"] != "scored":
            continue
        detail = client.get(f"/api/verdicts/{result['content_id']}").json()
        index = detail["evidence"][0]["index"]
        overlay = client.get(f"/media/{result['content_id']}/frames/{index}/gradcam.jpg")
        page = client.get(f"/media/{result['content_id']}/").text
        if result["verdict"] in ("fake", "uncertain"):
            assert detail["explained"] and overlay.status_code == 200 and overlay.content[:3] == b"\xff\xd8\xff"
            assert f"frames/{index}/gradcam.jpg" in page and "Grad-CAM" in page
        else:
            assert not detail["explained"] and overlay.status_code == 404 and "gradcam.jpg" not in page


def test_api_upload_puts_media_into_the_bucket_and_refuses_the_rest(client, scored_verdicts, tmp_path):
    clip = scored_verdicts.dropped[0].read_bytes()
    if len(clip) > 1024 * 1024:
        pytest.skip("generated clip larger than the test's upload limit")
    accepted = client.post("/api/uploads", files={"file": ("../../escape me.mp4", clip, "video/mp4")})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["kind"] == "video" and (tmp_path / "bucket" / "escape_me.mp4").read_bytes() == clip
    text = client.post("/api/uploads", files={"file": ("clip.mp4", b"hello", "video/mp4")})
    assert text.status_code == 415 and "content" in text.json()["detail"]
    big = client.post("/api/uploads", files={"file": ("big.jpg", io.BytesIO(b"\xff\xd8\xff" * 400_000), "image/jpeg")})
    assert big.status_code == 413
    assert sorted(p.name for p in (tmp_path / "bucket").iterdir()) == ["escape_me.mp4"]


def test_form_upload_redirects_back_with_a_message(client, scored_verdicts):
    image = next(p for p in scored_verdicts.dropped if p.suffix == ".jpg")
    done = client.post("/upload", files={"file": (image.name, image.read_bytes(), "image/jpeg")})
    assert done.status_code == 200 and "Uploaded <b>chelsea" in done.text
    refused = client.post("/upload", files={"file": ("a.jpg", b"plain text", "image/jpeg")})
    assert refused.status_code == 200 and "Upload refused" in refused.text


def test_guards_apply_to_every_route_and_pages_redirect_to_login(scored_verdicts, tmp_path):
    from fastapi import Depends, HTTPException

    def no_session():
        raise HTTPException(401, "Not authenticated")

    app = create_app(settings=load_settings, store=lambda: scored_verdicts.store,
                     read_access=[Depends(no_session)], login_url=lambda nxt: f"/auth/login?next={nxt}")  # fmt: skip
    browser = TestClient(app, follow_redirects=False)
    page = browser.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/auth/login?next=/"
    assert browser.get("/api/verdicts", headers={"accept": "text/html"}).status_code == 401
    assert browser.post("/api/uploads", files={"file": ("a.jpg", b"x")}).status_code == 401
    for path in ("/openapi.json", "/api/verdicts/0000", "/media/0000/", "/media/0000/scores.png", "/models/r/card"):
        assert browser.get(path).status_code == 401, path
    assert browser.get("/docs").status_code == browser.get("/redoc").status_code == 404  # not served at all


def test_the_openapi_schema_describes_the_upload_body(client):
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/api/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["file"] and "/api/verdicts/{content_id}" in schema["paths"]


@pytest.mark.parametrize(
    "params",
    [{"band[$ne]": "real"}, {"model_version[$gt]": ""}, {"model_version[$ne]": "99"}, {"$where": "1"},
     {"outside[$ne]": "true"}],
)  # fmt: skip
def test_operator_shaped_parameters_are_ignored(client, params):
    everything = client.get("/api/verdicts", params={"limit": 500}).json()
    assert len(everything) > 1
    assert client.get("/api/verdicts", params={**params, "limit": 500}).json() == everything


@pytest.mark.parametrize("params", [{"band": "$ne"}, {"band": "real|fake"}, {"band": ".*"}, {"outside": "$ne"}])
def test_filters_outside_their_values_are_refused(client, params):
    assert client.get("/api/verdicts", params=params).status_code == 422


@pytest.mark.parametrize("version", ['{"$gt": ""}', "$gt", ".*", "^1"])
def test_a_model_version_is_matched_as_plain_text(client, version):
    assert client.get("/api/verdicts", params={"model_version": version}).json() == []


def test_id_prefixes_are_plain_text_not_patterns(client, scored_verdicts):
    prefix = scored_verdicts.results[0]["content_id"][:8]
    assert client.get(f"/api/verdicts/{prefix}").status_code == 200
    for pattern in (".*", "^", "[0-9a-f]", f"{prefix}.*", f"^{prefix}", "$gt", "%00"):
        assert client.get(f"/api/verdicts/{pattern}").status_code == 404, pattern
        assert client.get(f"/media/{pattern}/").status_code == 404, pattern


@pytest.mark.parametrize("limit", [10**12, 501, 0, -1, "1e9", "lots"])
def test_limits_are_bounded(client, limit):
    assert client.get("/api/verdicts", params={"limit": limit}).status_code == 422
    assert client.get("/", params={"limit": limit}).status_code == 422


HOSTILE = '"><img src=x onerror=alert(1)>.jpg'


@pytest.fixture
def hostile_named(scored_verdicts, store, tmp_path):
    """A client over a fresh database holding a real verdict for a file whose name is HTML."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    path = bucket / HOSTILE
    path.write_bytes(next(p for p in scored_verdicts.dropped if p.suffix == ".jpg").read_bytes())
    settings = load_settings(storage={"root": tmp_path / "data", "incoming_uri": bucket.as_uri()})
    loaded = score.LoadedModel(scored_verdicts.bundle, tracking.ModelRef("mediacheck-detector", "1", "run-untrained"))
    result = score.score_uri(f"file://{path}", loaded, settings, store, settle_s=0)
    assert result["status"] == "scored", result
    return TestClient(create_app(settings=lambda: settings, store=lambda: store)), result["content_id"]


def test_html_in_a_file_name_is_escaped_in_every_page(hostile_named):
    client, content_id = hostile_named
    pages = {
        "list": client.get("/").text,
        "detail": client.get(f"/media/{content_id}/").text,
        "uploaded": client.get("/", params={"uploaded": HOSTILE}).text,
        "refused": client.get("/", params={"refused": HOSTILE}).text,
    }
    for name, page in pages.items():
        assert "<img src=x" not in page and "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.jpg" in page, name
    assert client.get(f"/api/verdicts/{content_id}").json()["source_uri"].endswith(HOSTILE)  # JSON keeps the name


def test_drift_past_the_threshold_shows_a_banner_linking_to_the_report(client, scored_verdicts):
    from pipeline.media.stats import MediaStats
    from pipeline.model.drift import DriftReference, MediaProfile, compare
    from pipeline.stages.drift import DriftCheck
    from pipeline.store import DRIFT

    assert 'id="drift-banner"' not in client.get("/").text
    # Trained on large bright PNGs: the stored verdicts (192 px JPEGs and H.264 videos) have drifted from them.
    training = [MediaProfile.from_stats(MediaStats("image", 1024, 1024, "png", bits_per_pixel=9.0 + i / 100),
                                        brightness=0.9 - i / 1000) for i in range(50)]  # fmt: skip
    reference = DriftReference.fit(training, [0.5 + i / 200 for i in range(50)], limit=100, seed=0)
    settings = scored_verdicts.settings.model_copy(update={"drift": scored_verdicts.settings.drift.model_copy(
        update={"min_media": 3})})  # fmt: skip
    recent = [v for v in scored_verdicts.store.list_verdicts(limit=50) if v["status"] == "scored"]
    found = DriftCheck(tracking.ModelRef("mediacheck-detector", "1", "run-untrained"),
                       compare(reference, [MediaProfile.from_verdict(v) for v in recent], settings.drift),
                       [v["_id"] for v in recent], recent[-1]["scored_at"], recent[0]["scored_at"])  # fmt: skip
    assert {"short_side", "format"} <= {s.statistic for s in found.drifted}
    scored_verdicts.store.record_drift(found.document(settings))
    try:
        page = client.get("/")
        assert 'id="drift-banner"' in page.text and 'href="drift/"' in page.text and "short_side" in page.text
        report = client.get("/drift/")
        assert report.status_code == 200 and report.text.count('<tr class="drifted">') == len(found.drifted)
        assert "image/png 100%" in report.text
        api = client.get("/api/drift").json()
        assert api[0]["drifted_statistics"] == [s.statistic for s in found.drifted]
        assert "content_ids" not in api[0]["window"] and api[0]["window"]["media"] == len(recent)
    finally:
        scored_verdicts.store.db[DRIFT].delete_many({})
