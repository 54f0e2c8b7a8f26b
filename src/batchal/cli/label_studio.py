"""`batchal label-studio`: serve a labelling project to Label Studio as its ML backend."""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path

from batchal.cli.options import train_config
from batchal.cli.summaries import SUMMARIES
from batchal.integrations.label_studio import DEFAULT_IMAGE_URL, Backend, LabelStudioClient, create_app, label_config, tasks_for


def add_parser(sub) -> None:
    cmd = sub.add_parser("label-studio", help=SUMMARIES["label-studio"])
    ls_sub = cmd.add_subparsers(dest="ls_command", required=True)
    config = ls_sub.add_parser("config", help="print a Label Studio labelling config for the project's classes")
    config.add_argument("project", help="a project made by `batchal label init`")
    config.set_defaults(func=cmd_config)
    tasks = ls_sub.add_parser("tasks", help="write the project's items as Label Studio import tasks (JSON)")
    tasks.add_argument("project")
    tasks.add_argument("--image-url", dest="image_url", default=DEFAULT_IMAGE_URL,
                       help="each task's image URL, {path} being the image's path inside the images folder and {folder} "
                            f"that folder's name (default {DEFAULT_IMAGE_URL}: Label Studio's local-files serving with the "
                            "document root set to the folder's parent and a local storage on the folder)")
    tasks.add_argument("--output", "-o", help="file to write (default: standard output)")
    tasks.set_defaults(func=cmd_tasks)
    serve = ls_sub.add_parser("serve", help="serve the ML backend (Label Studio connects to it: Settings > Model)")
    serve.add_argument("project")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9090)
    serve.add_argument("--score-candidates", dest="score_candidates", type=int, default=1000,
                       help="pool items scored per round (default 1000)")
    serve.add_argument("--epoch-samples", dest="epoch_samples", type=int, help="training examples per epoch (default 5056, batchal run's)")
    serve.add_argument("--max-epochs", dest="max_epochs", type=int, help="epochs at most per training (default 30, batchal run's)")
    serve.add_argument("--device", default="cpu", help="where the model retrains and selects: cpu (default), cuda, cuda:N or auto")
    serve.add_argument("--label-studio-url", dest="label_studio_url", default=os.environ.get("LABEL_STUDIO_URL"),
                       help="Label Studio's address, e.g. http://localhost:8080 (default $LABEL_STUDIO_URL): with --api-key, "
                            "the backend refreshes the ranking itself after every batch")
    serve.add_argument("--api-key", dest="api_key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                       help="a Label Studio API key (Account & Settings; default $LABEL_STUDIO_API_KEY)")
    serve.add_argument("--basic-auth-user", dest="basic_auth_user", default=os.environ.get("BASIC_AUTH_USER", "batchal"),
                       help="the user Label Studio's model connection sends (Use Basic Auth; default $BASIC_AUTH_USER, else batchal)")
    serve.add_argument("--basic-auth-pass", dest="basic_auth_pass", default=os.environ.get("BASIC_AUTH_PASS"),
                       help="its password (default $BASIC_AUTH_PASS, else a fresh random one, printed)")
    serve.add_argument("--no-auto-next", dest="auto_next", action="store_false",
                       help="do not retrain when the batch is complete (Label Studio's Start Training does it)")
    serve.set_defaults(func=cmd_serve)


def _project(path: str, **kwargs):
    try:
        from batchal.labelling import Project
    except ImportError as exc:
        raise ValueError(f"the Label Studio backend needs the labelling extra: pip install -c constraints.txt -e '.[label]' ({exc})") from None
    if not (Path(path) / "project.sqlite").is_file():
        raise ValueError(f"{path} is not a labelling project (no project.sqlite); make one with: batchal label init {path} --images FOLDER --classes A,B")
    return Project(path, **kwargs)


def cmd_config(args: argparse.Namespace) -> int:
    print(label_config(_project(args.project).classes), end="")
    print("Connect the model with basic auth (Use Basic Auth: the user and password `batchal label-studio serve` prints, or "
          "$BASIC_AUTH_USER/$BASIC_AUTH_PASS); the project's webhook to the backend's /webhook must send the same "
          "Authorization header (serve sets it itself when given --label-studio-url and --api-key)", file=sys.stderr)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    text = json.dumps(tasks_for(_project(args.project), args.image_url), indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"{args.output}: import it in Label Studio (Import, or POST /api/projects/ID/import)", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from batchal.labelling.app import refuse_port_in_use

    project = _project(args.project, train_config=train_config(args), device=args.device, score_candidates=args.score_candidates,
                       background=True)
    project.train_in_background()  # the labels so far, while Label Studio connects
    refuse_port_in_use(args.host, args.port)
    if bool(args.label_studio_url) != bool(args.api_key):
        raise ValueError("--label-studio-url and --api-key go together (or $LABEL_STUDIO_URL and $LABEL_STUDIO_API_KEY)")
    client = LabelStudioClient(args.label_studio_url, args.api_key) if args.label_studio_url else None
    password = args.basic_auth_pass or secrets.token_urlsafe(18)
    header = "Basic " + base64.b64encode(f"{args.basic_auth_user}:{password}".encode()).decode()
    backend = Backend(project, auto_next=args.auto_next, client=client, webhook_headers={"Authorization": header})
    print(f"batchal ML backend for Label Studio: {project.store.item_count()} items, classes {', '.join(project.classes)}, "
          f"strategy {project.meta['strategy']}", flush=True)
    print(f"In Label Studio: Settings > Model > Connect model, URL http://{args.host}:{args.port}, Use Basic Auth with user "
          f"{args.basic_auth_user} and password {password} ; then sort the Data Manager by prediction score, descending", flush=True)
    if client is None:
        print("No --label-studio-url/--api-key: after each batch, run Retrieve Predictions on all tasks, then set the "
              "project's model version to the backend's newest (Settings > Predictions); and give the project's webhook to "
              f".../webhook the header Authorization: {header} (Settings > Webhooks), or annotations are refused", flush=True)
    try:
        uvicorn.run(create_app(backend, (args.basic_auth_user, password)), host=args.host, port=args.port, log_level="warning")
    finally:  # no thread left inside PyTorch when the process exits
        project.close()
    return 0

