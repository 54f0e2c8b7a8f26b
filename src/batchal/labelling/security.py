"""One security model for every HTTP surface batchal serves: the labelling page and API
(``batchal label serve``) and the Label Studio ML backend (``batchal label-studio serve``).

Every state-changing request (any method but GET, HEAD and OPTIONS) must carry
``Content-Type: application/json`` (a cross-site form or ``no-cors`` fetch cannot send it without a
CORS preflight, which these servers never grant), must come from the server's own origin when the
browser says where it comes from (``Origin``, or only ``Referer``), and must fit in the body cap;
then the server's own credentials check runs (the page's tokens, the backend's basic auth), and
every response forbids framing and MIME sniffing. :func:`guard` installs all of it on an app.
"""

from __future__ import annotations

import base64
import secrets
from typing import Awaitable, Callable, Optional
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

#: Largest request body accepted by default (a label request is well under 1 KiB).
MAX_BODY_BYTES = 64 * 1024

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: A credentials check: None lets the request through, a response refuses it.
Authorise = Callable[[Request], Awaitable[Optional[Response]]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def cross_site_refusal(request: Request, max_body_bytes: int = MAX_BODY_BYTES) -> Optional[JSONResponse]:
    """The refusal of a state-changing request from another origin, not JSON, or over the cap; None: it may go on."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    origin = request.headers.get("origin")
    if origin is None and request.headers.get("referer"):
        parts = urlsplit(request.headers["referer"])
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is not None and origin != own_origin(request):
        return error(403, f"cross-origin request refused: Origin {origin} is not this server ({own_origin(request)})")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return error(415, f"Content-Type must be application/json, got {content_type or 'none'}")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
        return error(413, f"request body over {max_body_bytes} bytes")
    return None


def guard(app: FastAPI, authorise: Authorise, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Install the cross-site defences, ``authorise`` and the security headers on ``app``."""

    @app.middleware("http")
    async def guarded(request: Request, call_next):
        response = cross_site_refusal(request, max_body_bytes) or await authorise(request) or await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response


def basic_auth(user: str, password: str, open_paths: tuple[str, ...] = ()) -> Authorise:
    """HTTP basic auth (what Label Studio's ML backend connection sends): every request but a GET
    of ``open_paths`` needs the user and password."""
    expected = f"{user}:{password}".encode()

    async def authorise(request: Request) -> Optional[Response]:
        if request.method == "GET" and request.url.path in open_paths:
            return None
        header = request.headers.get("authorization", "")
        given = b""
        if header.lower().startswith("basic "):
            try:
                given = base64.b64decode(header[6:].strip(), validate=True)
            except ValueError:
                given = b""
        if given and secrets.compare_digest(given, expected):
            return None
        return JSONResponse({"error": "missing or wrong credentials: send HTTP basic auth (Label Studio: the model connection's "
                                      "basic auth user and password)"}, status_code=401, headers={"WWW-Authenticate": 'Basic realm="batchal"'})

    return authorise
