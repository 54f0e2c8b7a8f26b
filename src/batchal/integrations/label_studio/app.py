"""The backend as a web app: the protocol's routes over :class:`Backend`, behind the security
every batchal server has (``batchal.labelling.security``): basic auth on every request but
``GET /health`` (Label Studio's model connection sends it), JSON only, a body cap, no foreign
Origin, no framing."""

from batchal.integrations.label_studio.backend import Backend
from batchal.integrations.label_studio.config import ProtocolError

#: Largest request body: a /predict of a few thousand tasks (Label Studio sends them in pages).
MAX_BODY_BYTES = 4 * 2**20


def create_app(backend: Backend, credentials: tuple[str, str]):
    """credentials: (user, password) of HTTP basic auth, as Label Studio's model connection is given them."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from batchal.labelling.security import basic_auth, guard

    user, password = credentials
    if not user or not password:
        raise ValueError("the Label Studio backend needs a basic auth user and password (--basic-auth-user, --basic-auth-pass)")
    app = FastAPI(title="batchal Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    guard(app, basic_auth(user, password, open_paths=("/health", "/")), MAX_BODY_BYTES)

    async def answer(request: Request, handler):
        try:
            body = await request.json() if request.method == "POST" else {}
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        try:
            return JSONResponse(await run_in_threadpool(handler, body))
        except (ProtocolError, ValueError, KeyError, PermissionError) as exc:
            return JSONResponse({"error": str(exc).strip("'\"")}, status_code=400)

    @app.get("/health")
    @app.get("/")
    async def health(request: Request):
        return await answer(request, lambda _: backend.health())

    @app.post("/setup")
    async def setup(request: Request):
        return await answer(request, backend.setup)

    @app.post("/predict")
    async def predict(request: Request):
        return await answer(request, backend.predict)

    @app.post("/webhook")
    async def webhook(request: Request):
        return await answer(request, backend.webhook)

    @app.post("/train")
    async def train(request: Request):
        return await answer(request, lambda _: {"job": None, "state": backend.next_batch()})

    @app.get("/versions")
    async def versions(request: Request):
        return await answer(request, lambda _: {"versions": [backend.model_version()]})

    return app

