"""FastAPI app of the Detections view: list, detail, upload, and the same data as JSON.

Every page uses relative links only, so the app works under any mount prefix and inside the
Airflow UI's iframe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.intake import UploadError
from pipeline.settings import Settings
from pipeline.store import EVIDENCE_IMAGES, ResultStore
from pipeline.verdicts import OUTSIDE
from pipeline.web.plots import frame_score_plot
from pipeline.web.uploads import UPLOAD_BODY, receive_upload

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
BANDS = ("real", "uncertain", "fake")
Band = Annotated[str | None, Query(pattern="^(real|uncertain|fake)?$", description="Only this verdict band.")]
Outside = Annotated[bool, Query(description="Only verdicts that abstained: outside the training distribution.")]
CLOSE = {"Connection": "close"}  # refusing a request whose body is left unread: end it, do not drain it


def create_app(
    *,
    settings: Callable[[], Settings],
    store: Callable[[], ResultStore],
    read_access: Sequence[Any] = (),
    upload_access: Sequence[Any] = (),
    login_url: Callable[[str], str] | None = None,
    run_url: Callable[[str], str | None] = lambda run_id: None,
) -> FastAPI:
    """The Detections app.

    ``read_access`` guards every route and ``upload_access`` also guards uploads (FastAPI
    dependencies that raise 401/403). ``login_url(next)`` is where a browser without a
    session is sent; ``run_url(run_id)`` links a verdict to its training run. Upload routes read
    their body themselves, after these checks (see :mod:`pipeline.web.uploads`).
    """
    app = FastAPI(
        title="mediacheck detections", dependencies=list(read_access), openapi_url=None, docs_url=None, redoc_url=None
    )
    upload_guard = list(upload_access)

    @app.exception_handler(StarletteHTTPException)
    async def _to_login(request: Request, error: StarletteHTTPException) -> Response:
        wants_page = "text/html" in request.headers.get("accept", "") and "/api/" not in request.url.path
        closing = CLOSE if request.method == "POST" else {}  # an upload refused before or while it is read
        if error.status_code == status.HTTP_401_UNAUTHORIZED and wants_page and login_url:
            login = login_url(str(request.url.path))
            return RedirectResponse(login, status_code=status.HTTP_303_SEE_OTHER, headers=closing)
        headers = {**(error.headers or {}), **closing}
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)

    def _summaries(band: str | None, model_version: str | None, limit: int, outside: bool) -> list[dict]:
        rows = store().list_verdicts(
            limit=limit, verdict=band or None, model_version=model_version or None, reason=OUTSIDE if outside else None
        )
        return [summary(row) for row in rows]

    def _card(run_id: str) -> dict:
        run = store().training_run(run_id)
        if run is None or not run.get("card"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model card for run {run_id}")
        return run["card"]

    def _detail(content_id: str) -> dict:
        document = store().find_verdict_by_prefix(content_id)
        if document is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no verdict for {content_id}")
        return document

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        """The API's schema, behind the same login as every other route (FastAPI's own is not)."""
        return app.openapi()

    @app.get("/", response_class=HTMLResponse, name="list_page")
    def list_page(
        request: Request,
        band: Band = None,
        model_version: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        outside: Outside = False,
    ) -> Response:
        return TEMPLATES.TemplateResponse(
            request,
            "list.html",
            {
                "rows": _summaries(band, model_version, limit, outside),
                "bands": BANDS,
                "band": band or "",
                "outside": outside,
                "versions": store().model_versions(),
                "model_version": model_version or "",
                "uploaded": request.query_params.get("uploaded"),
                "refused": request.query_params.get("refused"),
                "max_upload_mb": settings().score.max_upload_mb,
                "drift": next(iter(store().drift_checks(limit=1)), None),
            },
        )

    @app.get("/media/{content_id}/", response_class=HTMLResponse, name="detail_page")
    def detail_page(request: Request, content_id: str) -> Response:
        document = _detail(content_id)
        run_id = document.get("model", {}).get("run_id")
        run = store().training_run(run_id) if run_id else None
        return TEMPLATES.TemplateResponse(
            request,
            "detail.html",
            {
                "v": summary(document),
                "doc": document,
                "run_url": run_url(run_id) if run_id else None,
                "has_card": bool(run and run.get("card")),
                "outside": OUTSIDE,
            },
        )

    def _evidence(content_id: str, index: int, image: str) -> Response:
        jpeg = store().evidence_jpeg(content_id, index, image=image)
        if jpeg is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stored {image} of frame {index} for {content_id}")
        return Response(bytes(jpeg), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/media/{content_id}/frames/{index}.jpg", name="evidence_frame")
    def evidence_frame(content_id: str, index: int) -> Response:
        return _evidence(content_id, index, "jpeg")

    @app.get("/media/{content_id}/frames/{index}/gradcam.jpg", name="evidence_gradcam")
    def evidence_gradcam(content_id: str, index: int) -> Response:
        """The frame with its Grad-CAM heatmap over it (kept for fake and uncertain verdicts)."""
        return _evidence(content_id, index, "gradcam_jpeg")

    @app.get("/models/{run_id}/card", response_class=HTMLResponse, name="card_page")
    def card_page(request: Request, run_id: str) -> Response:
        return TEMPLATES.TemplateResponse(request, "card.html", {"card": _card(run_id)})

    @app.get("/drift/", response_class=HTMLResponse, name="drift_page")
    def drift_page(request: Request, limit: int = Query(20, ge=1, le=200)) -> Response:
        """The latest drift checks: each statistic of the recent media against the model's training data."""
        return TEMPLATES.TemplateResponse(request, "drift.html", {"checks": store().drift_checks(limit=limit)})

    @app.get("/media/{content_id}/scores.png", name="score_plot")
    def score_plot(content_id: str) -> Response:
        return Response(frame_score_plot(_detail(content_id)), media_type="image/png")

    @app.post("/upload", dependencies=upload_guard, name="upload_form", openapi_extra=UPLOAD_BODY)
    async def upload_form(request: Request) -> Response:
        try:
            accepted = await receive_upload(request, settings())
        except UploadError as error:
            refused = f"./?refused={quote(str(error))}"
            return RedirectResponse(refused, status_code=status.HTTP_303_SEE_OTHER, headers=CLOSE)
        return RedirectResponse(
            f"./?uploaded={quote(accepted.uri.rsplit('/', 1)[-1])}", status_code=status.HTTP_303_SEE_OTHER
        )

    @app.get("/api/verdicts")
    def api_verdicts(
        band: Band = None,
        model_version: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        outside: Outside = False,
    ) -> list[dict]:
        """Most recent verdicts first, without per-frame scores."""
        return _summaries(band, model_version, limit, outside)

    @app.get("/api/models/{run_id}/card")
    def api_card(run_id: str) -> dict:
        """The model card of the training run that made a model version."""
        return jsonable(_card(run_id))

    @app.get("/api/drift")
    def api_drift(limit: int = Query(20, ge=1, le=200)) -> list[dict]:
        """The latest drift checks, most recent first (without the window's content ids)."""
        return [jsonable(check) for check in store().drift_checks(limit=limit)]

    @app.get("/api/verdicts/{content_id}")
    def api_verdict(content_id: str) -> dict:
        """One verdict with its per-frame scores, evidence frames and lineage."""
        return jsonable(_detail(content_id))

    @app.post("/api/uploads", dependencies=upload_guard, status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_BODY)
    async def api_upload(request: Request) -> dict:
        """Put an image or video (multipart field ``file``) into the watched bucket; it is scored on the next poll."""
        try:
            accepted = await receive_upload(request, settings())
        except UploadError as error:
            raise HTTPException(error.status, str(error)) from None
        return {**accepted.__dict__, "status": "queued for scoring"}

    return app


def summary(document: dict) -> dict:
    """The fields a list row shows, JSON-ready."""
    model = document.get("model") or {}
    evidence = document.get("evidence") or []
    return jsonable(
        {
            "content_id": document["_id"],
            "file_name": unquote(str(document.get("source_uri", "")).rsplit("/", 1)[-1]),
            "source_uri": document.get("source_uri"),
            "kind": document.get("kind"),
            "status": document.get("status"),
            "verdict": document.get("verdict"),
            "basis": document.get("basis"),
            "model_verdict": document.get("model_verdict"),
            "probability": document.get("probability"),
            "ood_score": document.get("ood_score"),
            "outside": document.get("reason") == OUTSIDE,
            "reason": document.get("reason"),
            "model_name": model.get("name"),
            "model_version": model.get("version"),
            "thumbnail_index": evidence[0]["index"] if evidence else None,
            "scored_at": document.get("scored_at"),
        }
    )


def jsonable(value: Any) -> Any:
    """Datetimes as ISO strings and binary evidence left out, recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items() if k not in EVIDENCE_IMAGES}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes) or (isinstance(value, float) and not math.isfinite(value)):
        return None  # JSON has no NaN or infinity (an undefined metric, an unbounded threshold)
    return value
