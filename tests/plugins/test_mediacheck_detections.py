"""The Detections view inside a real Airflow API server, driven by headless Chromium.

A user logs in through Airflow's own login page, opens the list and a detail page, and
uploads a file; anonymous requests are refused. Screenshots are kept in test-artifacts/.
Skipped with a reason where Debian's ``chromium`` is not installed (``.ci/run`` installs it).
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from pipeline.services import airflow_environment, free_port
from pipeline.settings import PROJECT_ROOT
from tests.web.test_uploads import MB, READ_AT_MOST, endless_jpeg, post_raw

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("MEDIACHECK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
USER, PASSWORD = "reviewer", "correct-horse-battery"


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory, mongo_uri, scored_verdicts):
    """A real ``airflow api-server`` on 127.0.0.1 with the project's plugins and one user."""
    home = tmp_path_factory.mktemp("airflow")
    port = free_port()
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    env = {
        **os.environ,
        **airflow_environment(
            project_root=PROJECT_ROOT, airflow_home=home, mongo_uri=mongo_uri, database=scored_verdicts.database
        ),
        "MEDIACHECK_MONGO__DATABASE": scored_verdicts.database,
        "MEDIACHECK_STORAGE__ROOT": str(home / "data"),
        "MEDIACHECK_STORAGE__INCOMING_URI": (home / "bucket").as_uri(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-secret",
    }
    airflow = str(PROJECT_ROOT / ".venv" / "bin" / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/api/v2/monitor/health", server, home / "api-server.log")
        yield {"base": base, "bucket": home / "bucket"}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_for(url: str, server: subprocess.Popen, log_path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"api-server exited: {log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=10)
            return
        except OSError:  # refused, reset or timed out (URLError and TimeoutError are OSErrors)
            time.sleep(1)
    raise TimeoutError(f"api-server not healthy after {timeout_s} s: {log_path.read_text()[-3000:]}")


def test_anonymous_callers_are_refused(airflow_ui):
    for path in ("/detections/api/verdicts", "/detections/", "/detections/openapi.json"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{airflow_ui['base']}{path}", timeout=60)
        assert refused.value.code == 401
    upload = urllib.request.Request(f"{airflow_ui['base']}/detections/api/uploads", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(upload, timeout=60)
    assert refused.value.code == 401


def test_an_anonymous_upload_is_refused_before_its_body_is_read(airflow_ui):
    port = int(airflow_ui["base"].rsplit(":", 1)[1])
    status, sent = post_raw(port, "/detections/api/uploads", {"Content-Length": str(400 * MB)}, endless_jpeg(400 * MB))
    assert status == b"HTTP/1.1 401 Unauthorized" and sent < READ_AT_MOST
    assert not airflow_ui["bucket"].exists() or list(airflow_ui["bucket"].iterdir()) == []


def test_the_json_api_takes_an_airflow_bearer_token(airflow_ui, scored_verdicts):
    login = urllib.request.Request(
        f"{airflow_ui['base']}/auth/token",
        data=json.dumps({"username": USER, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    token = json.load(urllib.request.urlopen(login, timeout=60))["access_token"]
    listing = urllib.request.Request(
        f"{airflow_ui['base']}/detections/api/verdicts?limit=100", headers={"Authorization": f"Bearer {token}"}
    )
    rows = json.load(urllib.request.urlopen(listing, timeout=60))
    assert {row["content_id"] for row in rows} >= {r["content_id"] for r in scored_verdicts.results}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_user_logs_in_reviews_verdicts_and_uploads(airflow_ui, scored_verdicts):
    from playwright.sync_api import expect, sync_playwright

    base = airflow_ui["base"]
    ARTIFACTS.mkdir(exist_ok=True)
    video = next(r for r in scored_verdicts.results if r["uri"].endswith("coffee-fake.mp4"))
    upload = next(p for p in scored_verdicts.dropped if p.suffix == ".jpg")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)  # a busy 2-core CI machine is slow, not broken
        expect.set_options(timeout=30_000)
        page.goto(f"{base}/detections/")
        assert "/auth/login" in page.url  # sent to Airflow's own login, not shown the data
        page.locator("input:not([type=password])").first.fill(USER)
        page.locator("input[type=password]").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
        page.goto(f"{base}/detections/")
        rows = page.locator("#verdicts tbody tr")
        expect(rows).to_have_count(len(scored_verdicts.results))
        expect(page.locator("#verdicts")).to_contain_text("coffee-fake.mp4")
        page.screenshot(path=ARTIFACTS / "detections-list.png", full_page=True)

        page.get_by_role("link", name="coffee-fake.mp4").click()
        expect(page.locator("#verdict")).to_have_text(video["verdict"])
        expect(page.locator("#lineage")).to_contain_text("run-untrained")
        page.wait_for_load_state("load")  # the score plot and the evidence frames
        for image in page.locator("img").all():
            assert image.evaluate("img => img.complete && img.naturalWidth > 0"), image.get_attribute("src")
        page.screenshot(path=ARTIFACTS / "detections-detail.png", full_page=True)

        page.goto(f"{base}/detections/?outside=true")  # the abstentions: the rendered chart
        page.get_by_role("link", name="chart.jpg").click()
        expect(page.locator("#outside-badge")).to_be_visible()
        expect(page.locator("#why")).to_contain_text("outside its training distribution")
        page.wait_for_load_state("load")
        overlays = page.locator("img.gradcam")
        expect(overlays).to_have_count(1)  # an image has one frame
        for image in page.locator("img").all():
            assert image.evaluate("img => img.complete && img.naturalWidth > 0"), image.get_attribute("src")
        page.screenshot(path=ARTIFACTS / "detections-abstention.png", full_page=True)

        page.goto(f"{base}/detections/")
        page.locator("#upload input[type=file]").set_input_files(str(upload))
        page.locator("#upload button").click()
        expect(page.locator("#uploaded")).to_contain_text(upload.name)
        assert (airflow_ui["bucket"] / upload.name).read_bytes() == upload.read_bytes()

        plugins = page.request.get(f"{base}/api/v2/plugins").json()["plugins"]
        views = [v for p in plugins if p["name"] == "mediacheck_detections" for v in p["external_views"]]
        assert views and views[0]["href"] == "detections/"
        page.goto(f"{base}/plugin/detections")
        expect(page.frame_locator("iframe").locator("#verdicts")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "detections-in-airflow.png", full_page=True)
        browser.close()
