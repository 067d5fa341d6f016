"""Uploads through HTTP: login and size are checked before the body is read, then a streaming cap.

The streaming checks run against a real uvicorn server on 127.0.0.1 and raw sockets, so that
what the server reads, and when it answers, is what a client on the network sees.
"""

import os
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from pipeline.media.images import encode_jpeg
from pipeline.services import free_port
from pipeline.settings import load_settings
from pipeline.web.app import create_app

MB = 1024 * 1024
OFFERED = 256 * MB  # what a hostile client tries to send; a server that read it all would take it all
READ_AT_MOST = 64 * MB  # what the socket buffers on both ends may take in before the server hangs up
BOUNDARY = "mediacheck-test-boundary"


def jpeg_bytes(seed: int = 0) -> bytes:
    return encode_jpeg(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8))


def no_session():
    raise HTTPException(401, "Not authenticated")


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        storage={"root": tmp_path / "data", "incoming_uri": (tmp_path / "bucket").as_uri()}, score={"max_upload_mb": 1}
    )


@pytest.fixture
def bucket(settings) -> Path:
    return Path(settings.storage.incoming_uri.removeprefix("file://"))


@pytest.fixture
def apps(settings, store):
    """The app open to anyone (``/open``) and behind a login nobody has (``/closed``)."""
    return {
        "open": create_app(settings=lambda: settings, store=lambda: store),
        "closed": create_app(settings=lambda: settings, store=lambda: store, read_access=[Depends(no_session)]),
    }


@pytest.fixture
def server(apps) -> Iterator[int]:
    """A real uvicorn server on 127.0.0.1 with both apps mounted; yields its port."""
    port = free_port()
    root = Starlette(routes=[Mount(f"/{name}", app) for name, app in apps.items()])
    uvicorn_server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    uvicorn_server.should_exit = True
    thread.join(timeout=30)


def post_raw(port: int, path: str, headers: dict[str, str], body: Iterable[bytes]) -> tuple[bytes, int]:
    """POST over a raw socket, sending ``body`` until the server answers or hangs up.

    Returns the status line and how many body bytes the server took in before that.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    answer: list[bytes] = []

    def read_status() -> None:
        try:
            answer.append(sock.makefile("rb").readline().strip())
        except OSError:  # timed out: no answer
            answer.append(b"no answer")

    reader = threading.Thread(target=read_status, daemon=True)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    sock.sendall(("\r\n".join(head + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode())
    reader.start()
    sent = 0
    try:
        for chunk in body:
            if answer:
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset or broken pipe: the server hung up
        pass
    reader.join(timeout=30)
    sock.close()
    return (answer[0] if answer else b"no answer"), sent


def file_part_head(name: str = "big.jpg") -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()


def endless_jpeg(total: int = OFFERED) -> Iterator[bytes]:
    """A file part that never ends within ``total`` bytes."""
    chunk = b"\xff\xd8\xff" + bytes(MB - 3)
    yield file_part_head()
    for _ in range(total // MB - 1):
        yield chunk


def chunked(body: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in body:
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(server, bucket):
    status, sent = post_raw(server, "/closed/api/uploads", {"Content-Length": str(400 * MB)}, endless_jpeg(400 * MB))
    assert status == b"HTTP/1.1 401 Unauthorized" and sent < READ_AT_MOST
    assert not bucket.exists()  # nothing was opened for it


def test_a_declared_length_over_the_limit_is_refused_at_once(server, bucket):
    status, sent = post_raw(server, "/open/api/uploads", {"Content-Length": str(300 * MB)}, endless_jpeg(300 * MB))
    assert status == b"HTTP/1.1 413 Request Entity Too Large" and sent < READ_AT_MOST
    assert not bucket.exists()


def test_a_body_without_a_length_is_cut_off_at_the_limit(server, bucket):
    status, sent = post_raw(server, "/open/api/uploads", {"Transfer-Encoding": "chunked"}, chunked(endless_jpeg()))
    assert status == b"HTTP/1.1 413 Request Entity Too Large" and sent < READ_AT_MOST
    assert list(bucket.iterdir()) == []  # the partial upload is gone too


def test_a_length_header_that_lies_does_not_lift_the_cap(apps, bucket):
    body = file_part_head() + b"\xff\xd8\xff" + bytes(3 * MB) + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": "1000"}
    refused = TestClient(apps["open"]).post("/api/uploads", content=body, headers=headers)
    assert refused.status_code == 413 and "score.max_upload_mb" in refused.json()["detail"]
    assert refused.headers["connection"] == "close" and list(bucket.iterdir()) == []


def test_the_api_stores_the_file_field_owner_only(apps, bucket):
    client = TestClient(apps["open"])
    accepted = client.post("/api/uploads", data={"note": "other fields are ignored"},
                           files={"file": ("../../a <b>.jpg", jpeg_bytes(), "image/jpeg")})  # fmt: skip
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["uri"] == f"file://{bucket}/a_b_.jpg" and accepted.json()["kind"] == "image"
    assert (bucket / "a_b_.jpg").read_bytes() == jpeg_bytes()
    assert stat.S_IMODE(os.stat(bucket / "a_b_.jpg").st_mode) == 0o600


@pytest.mark.parametrize(
    ("request_kwargs", "status", "says"),
    [({"content": b"\xff\xd8\xff", "headers": {"Content-Type": "image/jpeg"}}, 400, "multipart/form-data"),
     ({"files": {"other": ("a.jpg", jpeg_bytes(), "image/jpeg")}}, 400, "field 'file'"),
     ({"files": [("file", ("a.jpg", jpeg_bytes(1))), ("file", ("b.jpg", jpeg_bytes(2)))]}, 400, "one file"),
     ({"files": {"file": ("a.jpg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/jpeg")}}, 415, "content"),
     ({"files": {"file": ("a.png", b"<html><script>alert(1)</script></html>", "image/png")}}, 415, "content")],
)  # fmt: skip
def test_the_api_refuses_what_is_not_one_image_or_video(apps, bucket, request_kwargs, status, says):
    refused = TestClient(apps["open"]).post("/api/uploads", **request_kwargs)
    assert refused.status_code == status and says in refused.json()["detail"]
    assert not bucket.exists() or list(bucket.iterdir()) == []


def test_the_form_reports_where_the_upload_went_and_why_one_was_refused(apps, bucket):
    browser = TestClient(apps["open"], follow_redirects=False)
    first = browser.post("/upload", files={"file": ("photo.jpg", jpeg_bytes(1), "image/jpeg")})
    second = browser.post("/upload", files={"file": ("photo.jpg", jpeg_bytes(2), "image/jpeg")})
    assert first.status_code == second.status_code == 303 and first.headers["location"] == "./?uploaded=photo.jpg"
    kept = sorted(p.name for p in bucket.iterdir())
    assert second.headers["location"] == f"./?uploaded={kept[0]}" and kept[1] == "photo.jpg"
    refused = browser.post("/upload", files={"file": ("photo.jpg", b"not media", "image/jpeg")})
    assert refused.headers["location"].startswith("./?refused=not%20an%20image")


def test_an_anonymous_browser_is_sent_to_log_in_before_its_upload_is_read(settings, store):
    app = create_app(settings=lambda: settings, store=lambda: store, upload_access=[Depends(no_session)],
                     login_url=lambda nxt: f"/login?next={nxt}")  # fmt: skip
    browser = TestClient(app, follow_redirects=False)
    sent = browser.post("/upload", files={"file": ("a.jpg", jpeg_bytes())}, headers={"accept": "text/html"})
    assert sent.status_code == 303 and sent.headers["location"] == "/login?next=/upload"
    assert sent.headers["connection"] == "close"
