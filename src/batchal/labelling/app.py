"""The labelling web app (FastAPI): the page and the JSON API it uses.

API (every request needs an access token, as ``Authorization: Bearer TOKEN`` or the
``batchal_token`` cookie that ``GET /?token=TOKEN`` sets): the owner's token that ``serve``
prints, or an annotator's personal token from ``batchal label add-annotator``. Every label,
flag and undo is recorded with the token's annotator; the owner may name one in the body.

- ``GET /api/me``: ``{"annotator"}``, who this token labels as ("" for the owner).
- ``POST /api/flag`` with ``{"id", "kind": "unsure" | "bad_image", "note": optional}``: takes
  the item out of the pool without a label.
- ``GET /api/review``: items whose annotators disagree, or whose label the model confidently contradicts.

- ``GET /api/batch``: ``{"batch_id", "classes", "keys", "annotator", "waiting", "items": [{"id", "image_url", "label",
  "suggestion", "probability", "score", "path", "flag"}]}``, this annotator's share of the current batch chosen by the strategy
  (items held by another annotator are not handed out twice unless ``--overlap`` asks for it; ``waiting``: how many are)
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

Cross-site defences, as on every batchal server (``batchal.labelling.security``): a POST must
carry ``Content-Type: application/json`` and, when the browser sends ``Origin`` (or only
``Referer``), come from the server's own origin; every response forbids framing and MIME sniffing.
"""

from __future__ import annotations

import hashlib
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
from batchal.labelling.security import MAX_BODY_BYTES, error, guard

COOKIE = "batchal_token"
#: The project setting that keeps the owner's token, hashed, across restarts.
OWNER_TOKEN_KEY = "owner_token_sha256"


#: Item ids are SQLite integers: 1 .. 2^63 - 1.
MAX_ITEM_ID = 2**63 - 1



def create_app(project: Project, token: Optional[str]) -> FastAPI:
    """The page and its API over ``project``; ``token``: the owner's access token (None: the one
    the project keeps, hashed, from an earlier serve)."""
    app = FastAPI(title="batchal labelling", docs_url=None, redoc_url=None, openapi_url=None)
    guard(app, token_auth(project, token), MAX_BODY_BYTES)
    _add_error_handlers(app)
    _add_labelling_routes(app, project, resources.files("batchal.labelling").joinpath("page.html").read_text())
    _add_project_routes(app, project)
    return app


def token_auth(project: Project, token: Optional[str]):
    """The page's credentials check: the owner's token or an annotator's personal one, as a Bearer
    header or the cookie that ``GET /?token=TOKEN`` sets; the request's annotator goes to ``request.state``."""
    owner = hash_token(token) if token else project.store.meta().get(OWNER_TOKEN_KEY)
    if not owner:
        raise ValueError("no owner token: give one, or serve once with a token so that the project keeps it")

    def identity(given: str) -> Optional[str]:
        """The annotator a token stands for: '' for the owner's, the name for a personal one, None: no access."""
        if not given:
            return None
        if secrets.compare_digest(hash_token(given).encode(), owner.encode()):
            return ""
        return project.store.annotator_for(hash_token(given))

    def presented(request: Request) -> str:
        header = request.headers.get("authorization", "")
        return header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")

    def authorised(request: Request) -> bool:
        who = identity(presented(request))
        request.state.annotator = who
        return who is not None

    async def require_token(request: Request) -> Optional[Response]:
        if request.url.path == "/" and request.query_params.get("token"):
            if identity(request.query_params["token"]) is not None:
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict")
                return response
            return error(401, "wrong access token")
        if not authorised(request):
            if request.url.path == "/":
                return HTMLResponse("<h1>401</h1><p>Open the address with the access token that <code>batchal label serve</code> printed.</p>", status_code=401)
            return error(401, "missing or wrong access token: send 'Authorization: Bearer TOKEN' or open /?token=TOKEN first")
        return None

    return require_token


def _annotator_of(request: Request, body_annotator=None) -> Optional[str]:
    """The recorded annotator: the token's; the owner may name one (or stay anonymous: None)."""
    who = getattr(request.state, "annotator", "")
    if who:
        return who
    return body_annotator if body_annotator else None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return error(400, f"invalid request: {details}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))



def _add_labelling_routes(app: FastAPI, project: Project, page: str) -> None:
    """The page, the batch, labels, flags, undo and review."""
    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/api/me")
    def get_me(request: Request):
        return {"annotator": request.state.annotator}

    @app.get("/api/batch")
    def get_batch(request: Request):
        who = request.state.annotator
        batch_id, items = project.batch_for(who)
        _, everything = project.current_batch()
        given = project.store.annotator_labels()
        labels = project.store.current_labels()
        flagged = project.store.flagged()
        details = {d["id"]: d for d in project.store.batch_details(batch_id)}
        paths = {i: project.store.item_path(i) for i in items}
        again = project.store.relabel_items()  # asked for another label: each annotator sees only their own
        mine = lambda i: given.get(i, {}).get(who, (None,))[0] if project.overlap > 1 or i in again else labels.get(i)
        waiting = [i for i in everything if i not in items and i not in labels and i not in flagged]
        return {
            "batch_id": batch_id,
            "classes": project.classes,
            "keys": project.keys(),
            "descriptions": project.meta.get("descriptions"),
            "annotator": who,
            "waiting": len(waiting),
            "items": [{"id": i, "image_url": f"/api/items/{i}/image", "label": mine(i), "path": paths[i],
                       "flag": flagged.get(i, {}).get("kind"),
                       "suggestion": details.get(i, {}).get("suggestion"), "probability": details.get(i, {}).get("probability"),
                       "score": details.get(i, {}).get("score"), "random": bool(details.get(i, {}).get("audit")),
                       "second_opinion": i in again} for i in items],
        }

    @app.post("/api/undo")
    def post_undo(request: Request):
        undone = project.undo(_annotator_of(request))
        if undone is None:
            return error(409, "nothing to undo")
        return {"ok": True, **undone}

    @app.post("/api/flag")
    async def post_flag(request: Request):
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        item_id = body.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, int) or not 1 <= item_id <= MAX_ITEM_ID:
            return error(400, f"id must be an integer item id, got {str(item_id)[:40]!r}")
        try:
            row = await run_in_threadpool(project.flag, item_id, body.get("kind"), body.get("note"), _annotator_of(request))
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        except ValueError as exc:
            return error(400, str(exc))
        return {"ok": True, "id": item_id, "kind": body.get("kind"), "flag_id": row}

    @app.get("/api/review")
    def get_review():
        return {"items": project.review()}

    @app.post("/api/labels")
    async def post_label(request: Request):
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        item_id, label, annotator = body.get("id"), body.get("label"), body.get("annotator")
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            return error(400, f"id must be an integer item id, got {str(item_id)[:40]!r}")
        if not 1 <= item_id <= MAX_ITEM_ID:
            return error(404, f"no item with id {str(item_id)[:40]}")
        if not isinstance(label, str):
            return error(400, f"label must be a string, one of {', '.join(project.classes)}; got {str(label)[:40]!r}")
        if annotator is not None and (not isinstance(annotator, str) or len(annotator) > 100):
            return error(400, "annotator must be a string of at most 100 characters")
        try:
            # The SQLite commit (fsync) runs in a worker thread, not on the event loop.
            label_id = await run_in_threadpool(project.add_label, item_id, label, _annotator_of(request, annotator),
                                               request.state.annotator == "")
        except KeyError as exc:
            return error(404, str(exc.args[0]))
        except PermissionError as exc:
            return error(409, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        return {"ok": True, "id": item_id, "label": label, "label_id": label_id}



def _add_project_routes(app: FastAPI, project: Project) -> None:
    """The next batch, the status and the images."""
    @app.post("/api/next", status_code=202)
    def post_next():
        return {"state": project.request_next()}

    @app.get("/api/status")
    def get_status():
        return project.status()

    @app.get("/api/items/{item_id}/image")
    def get_image(item_id: int):
        if not 1 <= item_id <= MAX_ITEM_ID:
            return error(404, f"no item with id {str(item_id)[:40]}")
        path = project.image_path(item_id)
        if path is None:
            return error(404, f"no item with id {item_id}")
        safe = project.servable_path(item_id)
        if safe is None:
            return error(404, f"the image of item {item_id} is no longer a file inside the images folder")
        path = safe
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")



async def _json_body(request: Request):
    """The request's JSON object, or the 4xx answer (bodies without Content-Length are limited too)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):  # bad JSON, numbers of over 4,300 digits, deep nesting
        return error(400, 'body must be JSON: {"id": ITEM_ID, "label": CLASS}')
    if not isinstance(body, dict):
        return error(400, 'body must be a JSON object: {"id": ITEM_ID, "label": CLASS}')
    return body


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_annotator(project_dir, name: str) -> str:
    """Register an annotator; returns their personal token (only its hash is stored)."""
    from batchal.labelling.store import Store

    if not isinstance(name, str) or not name.strip() or len(name) > 100 or any(c in name for c in "\r\n\t"):
        raise ValueError(f"annotator name must be 1 to 100 characters on one line, got {name!r}")
    token = new_token()
    Store(project_dir).add_annotator(name.strip(), hash_token(token))
    return token


def refuse_port_in_use(host: str, port: int, hint: str = "") -> None:
    """``ValueError`` when ``host:port`` cannot be listened on: checked before a server prints an
    address that would lead people to another program. Probed as uvicorn binds (SO_REUSEADDR), so
    a port left in TIME_WAIT by a server killed a moment ago is free, one another program listens
    on is not."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}){hint}: choose another --port") from None


def new_token() -> str:
    return secrets.token_urlsafe(18)


def keep_owner_token(project: Project, token: str) -> None:
    """Keep the owner's token, hashed, in the project: the next serve accepts it (an open tab goes on working)."""
    project.store.set_meta(OWNER_TOKEN_KEY, hash_token(token))


def serve(project: Project, token: Optional[str], host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the app until interrupted (uvicorn)."""
    import uvicorn

    project.current_batch()
    try:
        uvicorn.run(create_app(project, token), host=host, port=port, log_level="warning")
    finally:  # no thread left inside PyTorch when the process exits
        project.close()
