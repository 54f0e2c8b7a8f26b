"""The labelling web app (FastAPI): the page and the JSON API it uses.

API (every request needs the access token, as ``Authorization: Bearer TOKEN`` or the
``batchal_token`` cookie that ``GET /?token=TOKEN`` sets):

- ``GET /api/batch``: ``{"batch_id", "classes", "items": [{"id", "image_url", "label",
  "suggestion", "probability", "score"}]}``, the current batch chosen by the strategy
  (``label``: the item's current label or null; ``suggestion`` and ``probability``: the model's
  most probable class, null before a model exists; ``score``: why the item was chosen).
- ``POST /api/labels`` with ``{"id": ITEM_ID, "label": CLASS, "annotator": optional}``:
  stores the label (committed to SQLite before the answer) -> ``{"ok", "id", "label", "label_id"}``.
  Relabelling adds to the history; the latest label counts.
- ``POST /api/undo``: undo the last label by a new history row -> ``{"ok", "id", "label", "label_id"}``
  (``label``: the item's label before, or null); 409 when there is nothing to undo.
- ``POST /api/next``: retrain in the background and select the next batch -> 202 ``{"state"}``
  (``"done"``, and no new batch, once every item is labelled).
- ``GET /api/status``: counts, training state, accuracy history.
- ``GET /api/items/{id}/image``: an item's image, by id only.

Errors are 4xx JSON ``{"error": message}``: 400 malformed or invalid input, 401 no or wrong
token, 403 a state-changing request from another origin, 404 unknown item, 413 a body over
``MAX_BODY_BYTES``, 415 a state-changing request that is not ``application/json``.

Cross-site defences: a POST must carry ``Content-Type: application/json`` (a cross-site form
or ``no-cors`` fetch cannot send it without a CORS preflight, which this server never grants)
and, when the browser sends ``Origin`` (or only ``Referer``), come from the server's own
origin; every response forbids framing (``X-Frame-Options: DENY``, CSP ``frame-ancestors
'none'``) and MIME sniffing.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
from importlib import resources
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from batchal.labelling.project import Project

COOKIE = "batchal_token"

#: Largest request body accepted (a label request is well under 1 KiB).
MAX_BODY_BYTES = 64 * 1024

#: Item ids are SQLite integers: 1 .. 2^63 - 1.
MAX_ITEM_ID = 2**63 - 1

_SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(project: Project, token: str) -> FastAPI:
    app = FastAPI(title="batchal labelling", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("batchal.labelling").joinpath("page.html").read_text()

    def authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        return bool(given) and secrets.compare_digest(given.encode(), token.encode())

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await guarded(request, call_next)
        for name, value in _SECURITY_HEADERS.items():
            response.headers[name] = value
        return response

    def own_origin(request: Request) -> str:
        return f"{request.url.scheme}://{request.headers.get('host', '')}"

    async def guarded(request: Request, call_next):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin")
            if origin is None and request.headers.get("referer"):
                from urllib.parse import urlsplit

                parts = urlsplit(request.headers["referer"])
                origin = f"{parts.scheme}://{parts.netloc}"
            if origin is not None and origin != own_origin(request):
                return _error(403, f"cross-origin request refused: Origin {origin} is not this server ({own_origin(request)})")
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return _error(415, f"Content-Type must be application/json, got {content_type or 'none'}")
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        return await require_token(request, call_next)

    async def require_token(request: Request, call_next):
        if request.url.path == "/" and request.query_params.get("token"):
            if secrets.compare_digest(request.query_params["token"].encode(), token.encode()):
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
            return _error(401, "wrong access token")
        if not authorised(request):
            if request.url.path == "/":
                return HTMLResponse("<h1>401</h1><p>Open the address with the access token that <code>batchal label serve</code> printed.</p>", status_code=401)
            return _error(401, "missing or wrong access token: send 'Authorization: Bearer TOKEN' or open /?token=TOKEN first")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, f"invalid request: {details}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/api/batch")
    def get_batch():
        batch_id, items = project.current_batch()
        labels = project.store.current_labels()
        details = {d["id"]: d for d in project.store.batch_details(batch_id)}
        return {
            "batch_id": batch_id,
            "classes": project.classes,
            "items": [{"id": i, "image_url": f"/api/items/{i}/image", "label": labels.get(i),
                       "suggestion": details.get(i, {}).get("suggestion"), "probability": details.get(i, {}).get("probability"),
                       "score": details.get(i, {}).get("score")} for i in items],
        }

    @app.post("/api/undo")
    def post_undo():
        undone = project.undo()
        if undone is None:
            return _error(409, "nothing to undo")
        return {"ok": True, **undone}

    @app.post("/api/labels")
    async def post_label(request: Request):
        raw = bytearray()
        async for chunk in request.stream():  # bodies without Content-Length are limited too
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(bytes(raw))
        except (ValueError, UnicodeDecodeError, RecursionError):  # bad JSON, numbers of over 4,300 digits, deep nesting
            return _error(400, 'body must be JSON: {"id": ITEM_ID, "label": CLASS}')
        if not isinstance(body, dict):
            return _error(400, 'body must be a JSON object: {"id": ITEM_ID, "label": CLASS}')
        item_id, label, annotator = body.get("id"), body.get("label"), body.get("annotator")
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            return _error(400, f"id must be an integer item id, got {str(item_id)[:40]!r}")
        if not 1 <= item_id <= MAX_ITEM_ID:
            return _error(404, f"no item with id {str(item_id)[:40]}")
        if not isinstance(label, str):
            return _error(400, f"label must be a string, one of {', '.join(project.classes)}; got {str(label)[:40]!r}")
        if annotator is not None and (not isinstance(annotator, str) or len(annotator) > 100):
            return _error(400, "annotator must be a string of at most 100 characters")
        try:
            # The SQLite commit (fsync) runs in a worker thread, not on the event loop.
            label_id = await run_in_threadpool(project.add_label, item_id, label, annotator)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        except ValueError as exc:
            return _error(400, str(exc))
        return {"ok": True, "id": item_id, "label": label, "label_id": label_id}

    @app.post("/api/next", status_code=202)
    def post_next():
        return {"state": project.request_next()}

    @app.get("/api/status")
    def get_status():
        return project.status()

    @app.get("/api/items/{item_id}/image")
    def get_image(item_id: int):
        if not 1 <= item_id <= MAX_ITEM_ID:
            return _error(404, f"no item with id {str(item_id)[:40]}")
        path = project.image_path(item_id)
        if path is None:
            return _error(404, f"no item with id {item_id}")
        safe = project.servable_path(item_id)
        if safe is None:
            return _error(404, f"the image of item {item_id} is no longer a file inside the images folder")
        path = safe
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    return app


def new_token() -> str:
    return secrets.token_urlsafe(18)


def serve(project: Project, token: str, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the app until interrupted (uvicorn)."""
    import uvicorn

    project.current_batch()
    uvicorn.run(create_app(project, token), host=host, port=port, log_level="warning")
