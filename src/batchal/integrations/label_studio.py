"""Label Studio, batch-aware: its ML-backend protocol served over a batchal labelling project.

Label Studio's community edition orders tasks by one number per task, the prediction score.
That cannot say "these ten together", so the backend writes the batch into the scores: the
current batch's unlabelled items (the BatchBALD/BADGE/... picks of a ``batchal label`` project,
audit items included, in batch order) score in (1, 2], highest first, and every other item
scores the latest model's uncertainty, ``1 - max probability``, in [0, 1). Sorting the Data
Manager by prediction score, descending, therefore lists the batch first, in batchal's order.

The protocol (what Label Studio 1.x sends, as in ``label_studio/ml/api_connector.py``):

- ``GET /health`` -> ``{"status": "UP", "model_class": "batchal", ...}``
- ``POST /setup`` ``{"project": "ID.TIMESTAMP", "schema": LABEL_CONFIG, ...}`` -> ``{"model_version"}``.
  The config must hold one ``<Choices>`` whose values are the project's classes (400 saying
  which are missing or extra otherwise). The version names the current batch
  (``batchal-STRATEGY-batch-N``): a new batch is a new version, and Label Studio then asks for
  predictions again.
- ``POST /predict`` ``{"tasks": [...], ...}`` -> ``{"results": [{"result", "score", "model_version"}, ...]}``,
  one per task in order. ``result`` is the model's suggestion as a ``choices`` region (empty
  before a model exists). A task names its item by ``data.batchal_id``, the image's path
  relative to the project's images folder (``batchal label-studio tasks`` writes them).
- ``POST /webhook``: ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` record the annotation's
  choice as a label of the item under annotator ``label-studio:USER``; a skipped (cancelled)
  annotation flags the item ``unsure``; ``ANNOTATIONS_DELETED`` withdraws the labels those
  annotations gave; ``START_TRAINING`` retrains. When every item of the current batch is
  labelled or flagged, the backend retrains and selects the next batch in the background.
- ``POST /train`` (older Label Studio's "Start training"): retrain and select now.

Keeping the ranking current. Label Studio averages, for the Data Manager's score column, only
the predictions whose model version is the project's, and asks the backend again only for tasks
without a prediction of the backend's current version. Given Label Studio's address and an API
key (``--label-studio-url``, ``--api-key`` or ``$LABEL_STUDIO_URL``, ``$LABEL_STUDIO_API_KEY``, as
Label Studio's own ML backends take them), the backend therefore, after connecting and after
every new batch, runs the Data Manager's "Retrieve predictions" action on all tasks and then sets
the project's model version to the new one: the sorted list then starts with the new batch with
no step by hand. Without them, do those two steps in Label Studio after each batch.

Label Studio must be allowed to call a backend on a local address (``ML_BLOCK_LOCAL_IP=false``,
and ``SSRF_PROTECTION_ENABLED=false`` for the webhook); the README gives the steps.
"""


import argparse
import json
import os
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

#: Annotators recorded for Label Studio users are named ``label-studio:<user>``.
ANNOTATOR_PREFIX = "label-studio:"
#: A label config larger than this is refused (a real one is a few KiB).
MAX_CONFIG_CHARS = 200_000
#: Default image URL of a task: Label Studio's own local-files serving (see the README).
DEFAULT_IMAGE_URL = "/data/local-files/?d={path}"
#: Seconds between the first /setup and the first ranking refresh (Label Studio saves the connection in between).
SETUP_SETTLE_SECONDS = 2.0


class ProtocolError(ValueError):
    """A request the backend cannot act on; answered 400 with its message."""


def choices_of(config: str) -> tuple[str, str, list[str]]:
    """(from_name, to_name, choice values) of the label config's single ``<Choices>`` tag."""
    if not isinstance(config, str) or not config.strip():
        raise ProtocolError("the label config is empty")
    if len(config) > MAX_CONFIG_CHARS or "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise ProtocolError("the label config is too large or declares a DOCTYPE/ENTITY; refused")
    try:
        root = ET.fromstring(config)
    except ET.ParseError as exc:
        raise ProtocolError(f"the label config is not XML ({exc})") from None
    tags = [t for t in root.iter() if t.tag == "Choices"]
    if len(tags) != 1:
        raise ProtocolError(f"the label config must hold exactly one <Choices> tag (it holds {len(tags)}); "
                            "batchal label-studio config PROJECT prints one that fits")
    tag = tags[0]
    values = [c.get("value") for c in tag.iter() if c.tag == "Choice"]
    if not tag.get("name") or not tag.get("toName") or not values or any(v is None for v in values):
        raise ProtocolError("the <Choices> tag needs name, toName and <Choice value=...> children")
    return tag.get("name"), tag.get("toName"), values


def label_config(classes: list[str], image_name: str = "image", choices_name: str = "label") -> str:
    """A Label Studio labelling config for the project: one image, one choice per class."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="{image_name}" value="$image"/>\n'
            f'  <Choices name="{choices_name}" toName="{image_name}" choice="single" showInline="true">\n{choices}\n  </Choices>\n</View>\n')


def tasks_for(project, image_url: str = DEFAULT_IMAGE_URL) -> list[dict]:
    """Label Studio import tasks, one per item: ``data.image`` (``image_url`` with ``{path}``,
    the item's path relative to the images folder, URL-quoted) and ``data.batchal_id`` (that
    path unquoted: the id the backend maps the task back to)."""
    if "{path}" not in image_url:
        raise ValueError(f"--image-url must contain {{path}}; got {image_url!r}")
    return [{"data": {"image": image_url.replace("{path}", quote(path)), "batchal_id": path}}
            for _, path in sorted(project.store.item_paths().items())]


class LabelStudioClient:
    """The two calls the backend makes to Label Studio's REST API (a legacy token, or a personal
    access token exchanged at ``/api/token/refresh`` for each use)."""

    def __init__(self, url: str, api_key: str, timeout: float = 120):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--label-studio-url must start with http:// or https://; got {url!r}")
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def _call(self, method: str, path: str, body=None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            if self.api_key.count(".") == 2:  # a JWT personal access token
                access = self._call("POST", "/api/token/refresh", {"refresh": self.api_key}, auth=False)["access"]
                headers["Authorization"] = f"Bearer {access}"
            else:
                headers["Authorization"] = f"Token {self.api_key}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode() if body is not None else None,
                                         method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def refresh_ranking(self, project_id: int, version: str) -> dict:
        """Ask for every task's prediction (Label Studio fetches those of ``version``), then make
        ``version`` the project's model version (it must exist as predictions first)."""
        done = self._call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}",
                          {"selectedItems": {"all": True, "excluded": []}})
        self._call("PATCH", f"/api/projects/{project_id}", {"model_version": version})
        return done


class Backend:
    """The protocol's logic over a :class:`batchal.labelling.Project` (no web framework here)."""

    def __init__(self, project, auto_next: bool = True, client: Optional[LabelStudioClient] = None):
        self.project = project
        self.auto_next = auto_next
        self.client = client
        self.ls_project: Optional[int] = None  # Label Studio's project id, from /setup
        self.last_refresh: Optional[str] = None  # what the last ranking refresh did (shown by /health)
        self._refreshing = threading.Lock()
        self._ids = {path: item for item, path in project.store.item_paths().items()}
        self._names: Optional[tuple[str, str]] = None  # (from_name, to_name) once /setup has been called
        self._lock = threading.Lock()
        self._annotations_file = Path(project.dir) / "label-studio-annotations.json"
        self._annotations: dict[str, list] = self._read_annotations()
        self.ignored_tasks = 0  # tasks seen without a known data.batchal_id

    # --- bookkeeping ---
    def _read_annotations(self) -> dict[str, list]:
        try:
            return json.loads(self._annotations_file.read_text())
        except FileNotFoundError:
            return {}

    def _remember(self, annotation_id, item: int, annotator: str) -> None:
        self._annotations[str(annotation_id)] = [item, annotator]
        tmp = self._annotations_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._annotations))
        os.replace(tmp, self._annotations_file)  # atomic: a crash leaves the old map or the new one

    def item_of(self, task: Any) -> Optional[int]:
        data = task.get("data") if isinstance(task, dict) else None
        key = data.get("batchal_id") if isinstance(data, dict) else None
        return self._ids.get(key) if isinstance(key, str) else None

    def model_version(self) -> str:
        batch = self.project.store.current_batch()
        return f"batchal-{self.project.meta['strategy']}-batch-{batch[0] if batch else 0}"

    # --- the protocol ---
    def health(self) -> dict:
        return {"status": "UP", "model_class": "batchal", "state": self.project.state, "error": self.project.error,
                "model_version": self.model_version(), "ignored_tasks": self.ignored_tasks, "last_refresh": self.last_refresh}

    def setup(self, body: dict) -> dict:
        from_name, to_name, values = choices_of(body.get("schema") if isinstance(body, dict) else None)
        classes = self.project.classes
        missing, extra = [c for c in classes if c not in values], [v for v in values if v not in classes]
        if missing or extra:
            raise ProtocolError("the label config's choices must be the project's classes: "
                                + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                                        f"not a class: {', '.join(extra)}" if extra else "") if p))
        self._names = (from_name, to_name)
        self.project.current_batch()  # the first (diversity) batch exists before the first prediction
        first = self.ls_project is None
        try:
            self.ls_project = int(str(body.get("project", "")).split(".")[0])
        except ValueError:
            pass
        if first and self.ls_project is not None:
            # Label Studio saves the connection after this answer: rank a moment later.
            self._in_background(lambda: (time.sleep(SETUP_SETTLE_SECONDS), self.refresh_ranking()))
        return {"model_version": self.model_version()}

    def _in_background(self, work) -> None:
        if self.client is not None:
            threading.Thread(target=work, daemon=True).start()

    def refresh_ranking(self) -> None:
        """Push the current batch's ranking into Label Studio (see the module docstring)."""
        if self.client is None or self.ls_project is None:
            return
        with self._refreshing:
            version = self.model_version()
            try:
                done = self.client.refresh_ranking(self.ls_project, version)
                self.last_refresh = f"{version}: {done.get('detail', done) if isinstance(done, dict) else done}"
            except (OSError, ValueError, KeyError) as exc:  # Label Studio down or the key refused: shown by /health
                self.last_refresh = f"{version}: failed ({exc})"
                print(f"batchal: could not refresh Label Studio's ranking: {exc}", file=sys.stderr, flush=True)

    def next_batch(self) -> str:
        """Retrain and select in the background; then refresh Label Studio's ranking."""
        state = self.project.request_next()

        def after():
            self.project.wait()
            if self.project.error is None:
                self.refresh_ranking()

        if state != "done":
            self._in_background(after)
        return state

    def scores(self, predictions: Optional[dict] = None) -> dict[int, float]:
        """Every item's ranking score (see the module docstring); ``predictions``: the store's, if already read."""
        store = self.project.store
        labels, flagged = store.current_labels(), store.flagged()
        out = {item: 0.0 for item in store.item_paths()}
        for item, (_, p) in (predictions if predictions is not None else store.predictions()).items():
            if item not in labels and item not in flagged:
                out[item] = max(0.0, min(1.0 - float(p), 0.999))
        batch = store.current_batch()
        open_items = [i for i in (batch[1] if batch else []) if i not in labels and i not in flagged]
        for rank, item in enumerate(open_items):
            out[item] = 1.0 + (len(open_items) - rank) / len(open_items)
        return out

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks") if isinstance(body, dict) else None
        if not isinstance(tasks, list):
            raise ProtocolError("predict needs a list of tasks")
        if self._names is None and isinstance(body.get("label_config"), str):
            self.setup({"schema": body["label_config"]})
        from_name, to_name = self._names or ("label", "image")
        predictions = self.project.store.predictions()
        version, scores = self.model_version(), self.scores(predictions)
        results = []
        for task in tasks:
            item = self.item_of(task)
            if item is None:
                self.ignored_tasks += 1
                results.append({"result": [], "score": 0.0, "model_version": version})
                continue
            suggestion = predictions.get(item)
            region = [{"from_name": from_name, "to_name": to_name, "type": "choices",
                       "value": {"choices": [suggestion[0]]}}] if suggestion else []
            results.append({"result": region, "score": scores.get(item, 0.0), "model_version": version})
        return {"results": results, "model_version": version}

    def webhook(self, body: dict) -> dict:
        action = body.get("action") if isinstance(body, dict) else None
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
            annotations, tasks = body.get("annotation"), body.get("task")
            pairs = zip(annotations, tasks) if isinstance(annotations, list) and isinstance(tasks, list) else [(annotations, tasks)]
            done = [self._annotation(a, t) for a, t in pairs]
            self._maybe_next()
            return {"action": action, "recorded": sum(1 for d in done if d)}
        if action == "ANNOTATIONS_DELETED":
            withdrawn = 0
            for entry in body.get("annotations") or []:
                known = self._annotations.get(str(entry.get("id"))) if isinstance(entry, dict) else None
                if known:
                    self.project.withdraw_label(int(known[0]), known[1])
                    withdrawn += 1
            return {"action": action, "withdrawn": withdrawn}
        if action == "START_TRAINING":
            return {"action": action, "state": self.next_batch()}
        return {"action": action, "ignored": True}  # Label Studio sends every action to the backend's webhook

    def _annotation(self, annotation: Any, task: Any) -> bool:
        if not isinstance(annotation, dict):
            return False
        item = self.item_of(task)
        if item is None:
            self.ignored_tasks += 1
            return False
        user = annotation.get("completed_by")
        user = user.get("email") or user.get("id") if isinstance(user, dict) else user
        annotator = f"{ANNOTATOR_PREFIX}{user}"
        if annotation.get("was_cancelled"):
            self.project.flag(item, "unsure", "skipped in Label Studio", annotator)
            return True
        label = self._choice(annotation.get("result"))
        if label is None:
            return False
        with self._lock:
            self.project.add_label(item, label, annotator)
            if annotation.get("id") is not None:
                self._remember(annotation["id"], item, annotator)
        return True

    def _choice(self, result: Any) -> Optional[str]:
        for region in result or []:
            if not isinstance(region, dict) or region.get("type") != "choices":
                continue
            if self._names and region.get("from_name") not in (None, self._names[0]):
                continue
            chosen = (region.get("value") or {}).get("choices") or []
            if len(chosen) == 1 and chosen[0] in self.project.classes:
                return chosen[0]
            raise ProtocolError(f"the annotation's choice {chosen!r} is not one class of {', '.join(self.project.classes)}")
        return None

    def _maybe_next(self) -> None:
        if not self.auto_next:
            return
        store = self.project.store
        batch = store.current_batch()
        if batch is None:
            return
        taken = set(store.current_labels()) | set(store.flagged())
        if all(item in taken for item in batch[1]):
            self.next_batch()


def create_app(backend: Backend):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="batchal Label Studio ML backend", docs_url=None, redoc_url=None)

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


# --- the command line: `batchal label-studio ...` ---
def add_commands(sub) -> None:
    cmd = sub.add_parser("label-studio", help="serve a labelling project to Label Studio as its ML backend (batch-aware ranking)")
    ls_sub = cmd.add_subparsers(dest="ls_command", required=True)
    config = ls_sub.add_parser("config", help="print a Label Studio labelling config for the project's classes")
    config.add_argument("project", help="a project made by `batchal label init`")
    config.set_defaults(func=_cmd_config)
    tasks = ls_sub.add_parser("tasks", help="write the project's items as Label Studio import tasks (JSON)")
    tasks.add_argument("project")
    tasks.add_argument("--image-url", dest="image_url", default=DEFAULT_IMAGE_URL,
                       help="each task's image URL, {path} being the image's path inside the images folder "
                            f"(default {DEFAULT_IMAGE_URL}: Label Studio's local-files serving)")
    tasks.add_argument("--output", "-o", help="file to write (default: standard output)")
    tasks.set_defaults(func=_cmd_tasks)
    serve = ls_sub.add_parser("serve", help="serve the ML backend (Label Studio connects to it: Settings > Model)")
    serve.add_argument("project")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9090)
    serve.add_argument("--score-candidates", dest="score_candidates", type=int, default=1000,
                       help="pool items scored per round (default 1000)")
    serve.add_argument("--device", default="cpu", help="where the model retrains and selects: cpu (default), cuda, cuda:N or auto")
    serve.add_argument("--label-studio-url", dest="label_studio_url", default=os.environ.get("LABEL_STUDIO_URL"),
                       help="Label Studio's address, e.g. http://localhost:8080 (default $LABEL_STUDIO_URL): with --api-key, "
                            "the backend refreshes the ranking itself after every batch")
    serve.add_argument("--api-key", dest="api_key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                       help="a Label Studio API key (Account & Settings; default $LABEL_STUDIO_API_KEY)")
    serve.add_argument("--no-auto-next", dest="auto_next", action="store_false",
                       help="do not retrain when the batch is complete (Label Studio's Start Training does it)")
    serve.set_defaults(func=_cmd_serve)


def _project(path: str, **kwargs):
    try:
        from batchal.labelling import Project
    except ImportError as exc:
        raise ValueError(f"the Label Studio backend needs the labelling extra: pip install -c constraints.txt -e '.[label]' ({exc})") from None
    if not (Path(path) / "project.sqlite").is_file():
        raise ValueError(f"{path} is not a labelling project (no project.sqlite); make one with: batchal label init {path} --images FOLDER --classes A,B")
    return Project(path, **kwargs)


def _cmd_config(args: argparse.Namespace) -> int:
    print(label_config(_project(args.project).classes), end="")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    text = json.dumps(tasks_for(_project(args.project), args.image_url), indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"{args.output}: import it in Label Studio (Import, or POST /api/projects/ID/import)", file=sys.stderr)
    else:
        print(text)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from batchal.labelling.app import refuse_port_in_use

    project = _project(args.project, device=args.device, score_candidates=args.score_candidates)
    refuse_port_in_use(args.host, args.port)
    if bool(args.label_studio_url) != bool(args.api_key):
        raise ValueError("--label-studio-url and --api-key go together (or $LABEL_STUDIO_URL and $LABEL_STUDIO_API_KEY)")
    client = LabelStudioClient(args.label_studio_url, args.api_key) if args.label_studio_url else None
    backend = Backend(project, auto_next=args.auto_next, client=client)
    print(f"batchal ML backend for Label Studio: {project.store.item_count()} items, classes {', '.join(project.classes)}, "
          f"strategy {project.meta['strategy']}", flush=True)
    print(f"In Label Studio: Settings > Model > Connect model, URL http://{args.host}:{args.port} ; "
          "then sort the Data Manager by prediction score, descending", flush=True)
    if client is None:
        print("No --label-studio-url/--api-key: after each batch, run Retrieve Predictions on all tasks, then set the "
              "project's model version to the backend's newest (Settings > Predictions)", flush=True)
    uvicorn.run(create_app(backend), host=args.host, port=args.port, log_level="warning")
    return 0
