"""`batchal label`: label real images in a browser, batch by batch, as the model asks."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from batchal.acquisition.registry import strategies
from batchal.cli.options import split_list, train_config
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    label = sub.add_parser("label", help=SUMMARIES["label"])
    label_sub = label.add_subparsers(dest="label_command", required=True)
    init = label_sub.add_parser("init", help="create a labelling project from a folder of PNG/JPEG images")
    init.add_argument("project", help="the project folder (created; holds project.sqlite)")
    init.add_argument("--images", required=True, help="folder of PNG or JPEG images (searched recursively)")
    init.add_argument("--classes", help="comma-separated class names, e.g. cat,dog")
    init.add_argument("--classes-file", dest="classes_file", help="a label file instead: one class a line, name[,key[,description]]")
    init.add_argument("--overlap", type=int, default=1, help="labels each item needs from different annotators (default 1)")
    init.add_argument("--audit-fraction", dest="audit_fraction", type=float, default=0.2,
                      help="random audit items per strategy pick, at least one a batch (default 0.2): they measure the accuracy "
                      "and compare the strategy with random; more make both tighter at that many more labels")
    init.add_argument("--relabel", action="store_true", help="with two annotators or more: a batch may ask another label of an item "
                      "whose label the model and the votes doubt, when that is worth more than a new item (ActiveLab's rule)")
    init.add_argument("--model", default="mnist_cnn", help="mnist_cnn (default), emnist_cnn, mlp, or your own MODULE:FACTORY (package.module:fn or file.py:fn)")
    init.add_argument("--weights", help="with MODULE:FACTORY: a state dict to start every round's fine-tuning from")
    init.add_argument("--features", help="FEATURES.npy: one row per image (sorted path order; or .npz with 'paths' and 'features') "
                      "from any backbone; a Bayesian MLP head is trained on them")
    init.add_argument("--labels", help="CSV of path,label for images already labelled (paths relative to --images)")
    init.add_argument("--stop-patience", dest="stop_patience", type=int, default=3,
                      help="batches without a better held-out accuracy before the page suggests stopping (default 3)")
    init.add_argument("--strategy", default="batchbald", help=f"one of {', '.join(strategies('classification'))} (default batchbald)")
    init.add_argument("--batch-size", dest="batch_size", type=int, default=10)
    init.add_argument("--image-size", dest="image_size", type=int, default=28, help="images are resized to this square size")
    init.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale)")
    init.add_argument("--mc-samples", dest="mc_samples", type=int, default=20)
    init.set_defaults(func=cmd_label_init)
    serve_cmd = label_sub.add_parser("serve", help="serve the labelling page (binds 127.0.0.1; prints the access token)")
    serve_cmd.add_argument("project")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8765)
    serve_cmd.add_argument("--token", help="access token (default: the one the project keeps from its last serve, else a fresh one)")
    serve_cmd.add_argument("--new-token", dest="new_token", action="store_true", help="make a new owner token (the old one stops working)")
    serve_cmd.add_argument("--score-candidates", dest="score_candidates", type=int, default=1000,
                           help="pool items scored per round, a random subset of a larger pool (default 1000: a batch in seconds)")
    serve_cmd.add_argument("--overlap", type=int, help="labels each item needs from different annotators (default: the project's)")
    serve_cmd.add_argument("--relabel", action=argparse.BooleanOptionalAction, default=None,
                           help="ask second opinions on doubtful labels (ActiveLab's rule; default: the project's)")
    serve_cmd.add_argument("--epoch-samples", dest="epoch_samples", type=int, help="training examples per epoch (default 5056, batchal run's)")
    serve_cmd.add_argument("--max-epochs", dest="max_epochs", type=int, help="epochs at most per training (default 30, batchal run's)")
    serve_cmd.add_argument("--device", default="cpu", help="where the model retrains and selects: cpu (default), cuda, cuda:N or auto")
    serve_cmd.set_defaults(func=cmd_label_serve)
    annot = label_sub.add_parser("add-annotator", help="register a named annotator and print their personal link")
    annot.add_argument("project")
    annot.add_argument("name")
    annot.add_argument("--host", default="127.0.0.1", help="the address the link names (serve's --host)")
    annot.add_argument("--port", type=int, default=8765, help="the port the link names (serve's --port)")
    annot.set_defaults(func=cmd_label_add_annotator)

    export = label_sub.add_parser("export", help="write every label")
    export.add_argument("project")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--predictions", help="also write the latest model's predictions for unlabelled items (same format)")
    export.add_argument("--model-weights", dest="model_weights", help="also train a model on every label and write its state dict here")
    export.set_defaults(func=cmd_label_export)


def cmd_label_init(args: argparse.Namespace) -> int:
    from batchal.labelling import init_project

    from batchal.labelling.project import read_classes_file

    if (args.classes is None) == (args.classes_file is None):
        raise ValueError("give the classes with --classes a,b,c or --classes-file FILE (one of them)")
    keys = descriptions = None
    if args.classes_file:
        classes, keys, descriptions = read_classes_file(args.classes_file)
    else:
        classes = split_list(args.classes, "--classes")
    store = init_project(args.project, args.images, classes, model=args.model, strategy=args.strategy,
                         batch_size=args.batch_size, image_size=args.image_size, grayscale=not args.rgb, mc_samples=args.mc_samples,
                         weights=args.weights, features=args.features, labels=args.labels, stop_patience=args.stop_patience,
                         keys=keys, descriptions=descriptions if descriptions and any(descriptions) else None, overlap=args.overlap,
                         relabel=args.relabel, audit_fraction=args.audit_fraction)
    skipped = store.meta().get("skipped", [])
    imported = len(store.current_labels())
    print(f"{args.project}: {store.item_count()} images registered" + (f", {imported} labels imported" if imported else "")
          + f"; start labelling with: batchal label serve {args.project}")
    if skipped:
        print(f"{len(skipped)} file(s) skipped:")
        for entry in skipped:
            print(f"  {entry['path']}: {entry['reason']}")
    return 0



def cmd_label_serve(args: argparse.Namespace) -> int:
    try:
        from batchal.labelling import Project
        from batchal.labelling.app import OWNER_TOKEN_KEY, keep_owner_token, new_token, refuse_port_in_use, serve
    except ImportError as exc:
        raise ValueError(f"the labelling service needs its extra: pip install -c constraints.txt -e '.[label]' ({exc})") from None

    project = Project(args.project, train_config=train_config(args), device=args.device, overlap=args.overlap,
                      score_candidates=args.score_candidates, background=True, compare_random=True, relabel=args.relabel)
    project.train_in_background()  # the labels so far, while the page opens
    refuse_port_in_use(args.host, args.port, "; another program (another batchal label serve?) uses it")
    kept = bool(project.store.meta().get(OWNER_TOKEN_KEY)) and not args.token and not args.new_token
    token = None if kept else (args.token or new_token())
    if token is not None:
        keep_owner_token(project, token)
    status = project.status()
    print(f"batchal labelling: {status['items']} items ({status['labelled']} labelled), classes {', '.join(project.classes)}, "
          f"strategy {status['strategy']}" + (f", {project.overlap} labels per item" if project.overlap > 1 else ""), flush=True)
    if kept:
        print(f"Open http://{args.host}:{args.port}/ : the owner's access token is the one of the last serve (a tab opened "
              "with it goes on working); --new-token makes a new one and prints its link", flush=True)
    else:
        print(f"Open http://{args.host}:{args.port}/?token={token}", flush=True)
    if status["annotators"]:
        print(f"Annotators ({', '.join(status['annotators'])}) open the links that `batchal label add-annotator` printed.", flush=True)
    serve(project, token, host=args.host, port=args.port)
    return 0



def cmd_label_add_annotator(args: argparse.Namespace) -> int:
    from batchal.labelling.app import add_annotator

    token = add_annotator(args.project, args.name)
    print(f"{args.name}'s personal link (keep it private; every label they give is recorded under their name):")
    print(f"http://{args.host}:{args.port}/?token={token}")
    return 0



def cmd_label_export(args: argparse.Namespace) -> int:
    from batchal.labelling import export_labels, export_predictions

    text = export_labels(args.project, args.format)
    if args.output:
        Path(args.output).write_text(text)
        rows = max(0, len(text.splitlines()) - (1 if args.format == "csv" else 0))
        print(f"labels written to {args.output} ({args.format}, {rows if args.format == 'csv' else len(text)} "
              f"{'rows' if args.format == 'csv' else 'characters'})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.predictions:
        Path(args.predictions).write_text(export_predictions(args.project, args.format))
        print(f"predictions for the unlabelled items written to {args.predictions}", file=sys.stderr)
    if args.model_weights:
        from batchal.labelling import Project

        trained = Project(args.project).train_final_model()  # on every label, the accuracy estimate's random items included
        shutil.copyfile(trained, args.model_weights)
        print(f"a model trained on every label written to {args.model_weights}", file=sys.stderr)
    return 0

