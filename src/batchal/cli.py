"""Command line: ``batchal run``, ``batchal datasets``, ``batchal strategies``.

The library reports progress through callbacks; here they become progress bars on a terminal
and plain lines otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import statistics
import sys
import time
import tomllib
import warnings
from pathlib import Path
from typing import Optional

from batchal.acquisition.registry import describe, get_strategy, strategies
from batchal.data.datasets import available_locally, dataset_names, load_dataset
from batchal.data.files import DataError
from batchal.experiment import COUNTING_NOTE, ExperimentConfig, labels_to_reach, run_experiment
from batchal.threads import use_threads
from batchal.training import TrainConfig
from batchal import __version__

# `batchal run` with no arguments: the README's main job, about a minute on 2 cores.
MAIN_JOB = {
    "dataset": "repeated-digits",
    "strategies": ["batchbald", "bald", "random"],
    "seeds": [0],
    "acquisition_size": 10,
    "initial_size": 20,
    "budget": 100,
    "mc_samples": 50,
}

_EXPERIMENT_FIELDS = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"strategy", "seed"}
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class _Bars:
    """Round and epoch bars (tqdm) on a terminal; one plain line per round otherwise."""

    def __init__(self, label: str, total_rounds: int, interactive: bool):
        self.label, self.interactive = label, interactive
        self.rounds = self.epochs = None
        if interactive:
            from tqdm.auto import tqdm

            # A terminal that reports no size (some pseudo-terminals) would get hidden, empty bars.
            size = shutil.get_terminal_size((100, 20))
            self._tqdm = functools.partial(tqdm, ncols=size.columns or 100, nrows=size.lines or 20, file=sys.stderr)
            self.rounds = self._tqdm(total=total_rounds, desc=label, unit="round")

    def resumed(self, round_: int, labelled: int) -> None:
        message = f"resuming {self.label} at round {round_} ({labelled} labels)"
        if self.interactive:
            self.rounds.update(round_)
            self.rounds.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def round_started(self, round_: int, labelled: int) -> None:
        if self.interactive:
            self.epochs = self._tqdm(desc=f"  training on {labelled} labels", unit="epoch", leave=False)

    def epoch_done(self, record: dict) -> None:
        if self.epochs is not None:
            self.epochs.update(1)
            if "val_accuracy" in record:
                self.epochs.set_postfix(val_acc=f"{record['val_accuracy']:.3f}")

    def round_done(self, row: dict) -> None:
        s = row["seconds"]
        if self.interactive:
            if self.epochs is not None:
                self.epochs.close()
            self.rounds.update(1)
            self.rounds.set_postfix(labelled=row["labelled"], acc=f"{row['test_accuracy']:.3f}")
        else:
            print(f"{self.label} round {row['round']}: {row['labelled']} labels, test accuracy {row['test_accuracy']:.4f}, "
                  f"NLL {row['test_nll']:.4f}; seconds train {s['train']:.1f} evaluate {s.get('evaluate', 0):.1f} score {s['score']:.1f} select {s['select']:.1f}", flush=True)

    def close(self) -> None:
        if self.rounds is not None:
            self.rounds.close()


def _split_list(text: str, flag: str, convert=str) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    kind = {int: "integers", float: "numbers"}.get(convert, "names")
    try:
        values = [convert(t) for t in items]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated {kind}, e.g. {flag} {_EXAMPLES[flag]}; got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: expected comma-separated {kind}, e.g. {flag} {_EXAMPLES[flag]}; got {text!r}")
    return values


_EXAMPLES = {"--strategy": "batchbald,bald,random", "--seeds": "0,1,2", "--thresholds": "0.9,0.95", "--classes": "cat,dog"}


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line ("warning: ..."), written above any progress bars."""
    text = f"warning: {message}"
    try:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(text, file=sys.stderr)


def _load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--config {path}: not valid TOML ({exc})") from None
    allowed = _EXPERIMENT_FIELDS | {"strategies", "seeds", "out", "thresholds"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    if "train" in data:
        bad = set(data["train"]) - _TRAIN_FIELDS
        if bad:
            raise ValueError(f"--config {path}: unknown [train] key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(_TRAIN_FIELDS))}")
    return data


def _settings(args: argparse.Namespace) -> dict:
    explicit = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "func", "config", "ray", "cpus_per_run", "gpus_per_run", "threads")}
    # No flag that defines the experiment and no config file: the built-in demonstration.
    demo = args.config is None and set(explicit) <= {"out", "data_dir", "device", "thresholds"}
    settings = dict(MAIN_JOB) if demo else {}
    if args.config is not None:
        settings.update(_load_toml(args.config))
    if "strategy" in explicit:
        settings["strategies"] = _split_list(explicit.pop("strategy"), "--strategy")
    if "seeds" in explicit:
        settings["seeds"] = _split_list(explicit.pop("seeds"), "--seeds", int)
    if "thresholds" in explicit:
        settings["thresholds"] = _split_list(explicit.pop("thresholds"), "--thresholds", float)
    train = dict(settings.pop("train", {}))
    for name in _TRAIN_FIELDS:
        if name in explicit:
            train[name] = explicit.pop(name)
    settings.update(explicit)
    settings["train"] = train
    return settings


def _table(results: dict[str, list[list[dict]]], acquisition_size: int, thresholds: list[float]) -> str:
    head = ["strategy", "seeds", "final labels", "final accuracy (median)"] + [f"labels to {t:.0%} (median)" for t in thresholds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy, runs in results.items():
        finals = [r[-1]["test_accuracy"] for r in runs if r]
        cells = [strategy, str(len(runs)), str(runs[0][-1]["labelled"]), f"{statistics.median(finals):.4f}"]
        for t in thresholds:
            reached = [labels_to_reach(r, t, acquisition_size) for r in runs]
            cells.append("not reached" if None in reached else str(statistics.median_low(reached)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from batchal.regression_run import REGRESSION_DATASETS, run_from_cli

    regression = settings.get("dataset") in REGRESSION_DATASETS
    names = settings.pop("strategies", ["regression_batchbald" if regression else "batchbald"])
    seeds = settings.pop("seeds", [0])
    out = Path(settings.pop("out", "runs"))
    thresholds = settings.pop("thresholds", [0.8, 0.9])
    if regression:  # a regression data set: its own loop (batchal/regression_run.py)
        applies = {"dataset", "acquisition_size", "initial_size", "budget", "mc_samples", "data_dir", "device"}
        ignored = [k for k, v in settings.items() if k not in applies and not (k == "train" and not v)]
        return run_from_cli(settings, names, seeds, out, ignored)
    unknown = [s for s in names if s not in strategies()]
    if unknown:
        raise ValueError(f"--strategy: unknown {', '.join(unknown)}; choose from {', '.join(strategies('classification'))}")
    other = [s for s in names if s not in strategies("classification")]
    if other:
        raise ValueError(f"--strategy: {', '.join(other)} serve(s) another label kind than this classification data set "
                         f"(regression ones run on --dataset diabetes or friedman1); choose from {', '.join(strategies('classification'))}")
    if settings.get("data_dir"):  # resolved here: a Ray worker elsewhere would read it against its own folder
        settings["data_dir"] = str(Path(settings["data_dir"]).expanduser().resolve())
    configs = {(s, seed): ExperimentConfig(strategy=s, seed=seed, **settings) for s in names for seed in seeds}
    first = next(iter(configs.values()))
    interactive = sys.stderr.isatty()
    download_bar = None
    if interactive:
        from tqdm.auto import tqdm

        def download_bar(desc, total):
            bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr)
            return bar.update
    data = load_dataset(first.dataset, first.data_dir, progress=download_bar, copies=first.copies, noise_std=first.noise_std,
                        label_column=first.label_column, image_size=first.image_size, rgb=first.rgb)
    print(f"{first.dataset}: {len(data.train_y)} training points, {len(data.test_y)} test points, {data.num_classes} classes; "
          f"strategies {', '.join(names)}; seeds {', '.join(map(str, seeds))}; results in {out}", flush=True)
    results: dict[str, list[list[dict]]] = {s: [] for s in names}
    rounds_total = (first.budget - first.initial_size + first.acquisition_size - 1) // first.acquisition_size + 1
    # Your own data (a path) gets a folder named after its last part, never the path itself.
    data_folder = first.dataset if first.dataset in dataset_names() else Path(first.dataset).name.replace(".", "-")
    folders = {(s, seed): out / data_folder / f"{s}-b{config.acquisition_size}-seed{seed}" for (s, seed), config in configs.items()}
    if args.ray is not None:
        failed = _run_on_ray(args, configs, folders, results)
    else:
        failed = []
        for (strategy, seed), config in configs.items():
            bars = _Bars(f"{strategy} seed {seed}", rounds_total, interactive)
            try:
                rows = run_experiment(config, folders[(strategy, seed)], data=data, progress=bars)
            finally:
                bars.close()
            results[strategy].append(rows)
    results = {s: runs for s, runs in results.items() if runs}
    if results:
        print()
        print(_table(results, first.acquisition_size, thresholds))
        print()
        print(COUNTING_NOTE)
        from batchal.report import write_report

        report_dir = out / "report"
        thresholds_text = ",".join(f"{t:g}" for t in thresholds)
        path = write_report([folders[key] for key in folders if folders[key].exists()], report_dir, thresholds)
        print(f"\nPlots (learning curves, labels needed) and a summary: {path}"
              f"\n(rewrite them any time with: batchal report {out / data_folder} --out {report_dir} --thresholds {thresholds_text})")
    if failed:
        print(f"batchal: error: {len(failed)} run(s) failed: {', '.join(failed)}; the others finished", file=sys.stderr)
        return 1
    return 0


def _run_on_ray(args, configs, folders, results) -> list[str]:
    from batchal.distributed.studies import run_study

    names = {f"{strategy} seed {seed}": (strategy, seed) for strategy, seed in configs}

    def on_done(outcome) -> None:
        if outcome.error is None:
            last = outcome.rows[-1]
            print(f"{outcome.name}: done, {last['labelled']} labels, test accuracy {last['test_accuracy']:.4f}", flush=True)
        else:
            print(f"{outcome.name}: FAILED: {outcome.error}", flush=True)

    runs = {name: (configs[key], folders[key]) for name, key in names.items()}
    print(f"running {len(runs)} runs on Ray ({args.ray}), {args.cpus_per_run or 1} CPU(s)"
          + (f" and {args.gpus_per_run} GPU" if args.gpus_per_run else "") + " each", flush=True)
    outcomes = run_study(runs, args.ray, cpus_per_run=args.cpus_per_run or 1.0, gpus_per_run=args.gpus_per_run or 0.0, on_done=on_done)
    for name, key in names.items():  # the table in the order of the command line
        if outcomes[name].error is None:
            results[key[0]].append(outcomes[name].rows)
    return [name for name in names if outcomes[name].error is not None]


def _needs_pyarrow(command: str) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise ValueError(f"batchal {command} reads and writes Parquet, which needs pyarrow (Ray is not needed in-process): "
                         "pip install -c constraints.txt -e '.[score]'")


def cmd_score(args: argparse.Namespace) -> int:
    _needs_pyarrow("score")
    from batchal.distributed.scoring import ScoreJob, score_pool

    shape = _split_list(args.input_shape, "--input-shape", int) if args.input_shape else None
    job = ScoreJob(pool=args.pool, model=args.model, weights=args.weights, mc_samples=args.mc_samples, seed=args.seed,
                   num_classes=args.num_classes, embeddings=args.embeddings, keep_log_probs=args.keep_log_probs,
                   shard_size=args.shard_size, batch_size=args.batch_size, image_size=args.image_size, grayscale=not args.rgb,
                   column=args.column, input_shape=shape)
    bar, start, resumed_items = None, time.perf_counter(), None

    def progress(done: int, total: int, items: int) -> None:
        nonlocal bar, resumed_items
        if resumed_items is None:  # the first call reports the shards a resumed job had already finished
            resumed_items = items
        rate = (items - resumed_items) / max(1e-9, time.perf_counter() - start)  # this call's items only
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            if bar is None:
                bar = tqdm(total=total, desc="scoring", unit="shard", file=sys.stderr)
            bar.n = done
            bar.set_postfix(items=items, items_per_s=f"{rate:.0f}")
            bar.refresh()
        else:
            print(f"scored {done}/{total} shards, {items} items ({rate:.0f} items/s)", flush=True)

    try:
        manifest = score_pool(job, args.out, ray_address=args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"{manifest['pool']['items']} items scored into {args.out} ({manifest['shards']} shards)"
          + (f"; {manifest['kept']} kept with their log-probabilities" if "kept" in manifest else ""))
    skipped = manifest.get("skipped") or []
    if skipped:
        shown = ", ".join(entry["id"] for entry in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        print(f"{len(skipped)} unreadable image(s) skipped: {shown} (all of them, with why, in {Path(args.out) / 'manifest.json'})")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    _needs_pyarrow("select")
    from batchal.distributed.selection import select_scored, sharded_strategies

    spread = [s for s in sharded_strategies() if get_strategy(s).sharded in ("kmeans_pp", "k_center")]
    if args.ray and args.strategy not in spread:
        print(f"batchal: note: --ray is used by {' and '.join(spread)} only; {args.strategy} selects in this process", file=sys.stderr)

    picks = select_scored(args.scored, args.strategy, args.batch_size, args.seed, beta=args.beta, num_samples=args.num_samples,
                          ray_address=args.ray)
    text = json.dumps(picks, indent=1) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"{len(picks['picks'])} picks written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    status = available_locally(args.data_dir)
    width = max(map(len, dataset_names()))
    for name in dataset_names():
        base = name.removeprefix("repeated-")
        print(f"{name:<{width}}  {status[base]}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    names = args.names or strategies()
    unknown = [n for n in names if n not in strategies()]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(strategies())}")
    for name in names:
        print(describe(name))
        print()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from batchal.report import write_report

    thresholds = _split_list(args.thresholds, "--thresholds", float) if args.thresholds else [0.9, 0.95]
    path = write_report(args.run_dirs, args.out, thresholds)
    print(f"report written to {path}")
    return 0


def cmd_label_init(args: argparse.Namespace) -> int:
    from batchal.labelling import init_project

    from batchal.labelling.project import read_classes_file

    if (args.classes is None) == (args.classes_file is None):
        raise ValueError("give the classes with --classes a,b,c or --classes-file FILE (one of them)")
    keys = descriptions = None
    if args.classes_file:
        classes, keys, descriptions = read_classes_file(args.classes_file)
    else:
        classes = _split_list(args.classes, "--classes")
    store = init_project(args.project, args.images, classes, model=args.model, strategy=args.strategy,
                         batch_size=args.batch_size, image_size=args.image_size, grayscale=not args.rgb, mc_samples=args.mc_samples,
                         weights=args.weights, features=args.features, labels=args.labels, stop_patience=args.stop_patience,
                         keys=keys, descriptions=descriptions if descriptions and any(descriptions) else None, overlap=args.overlap)
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
        from batchal.labelling.app import new_token, refuse_port_in_use, serve
    except ImportError as exc:
        raise ValueError(f"the labelling service needs its extra: pip install -c constraints.txt -e '.[label]' ({exc})") from None

    project = Project(args.project, device=args.device, overlap=args.overlap, score_candidates=args.score_candidates)
    refuse_port_in_use(args.host, args.port, "; another program (another batchal label serve?) uses it")
    token = args.token or new_token()
    status = project.status()
    print(f"batchal labelling: {status['items']} items ({status['labelled']} labelled), classes {', '.join(project.classes)}, "
          f"strategy {status['strategy']}" + (f", {project.overlap} labels per item" if project.overlap > 1 else ""), flush=True)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchal", description="Deep Bayesian batch active learning (BatchBALD, BADGE and baselines).")
    parser.add_argument("--version", action="version", version=f"batchal {__version__}")
    parser.add_argument("--threads", help="CPU threads per process: a number or auto (one per core); default $BATCHAL_THREADS, else 1 "
                        "(fastest on a busy machine, and the same seed gives the same numbers on any machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="simulate active learning on a data set (no arguments: the built-in demonstration)",
                         description="Simulated active learning with the data set's own labels. Without arguments: "
                         "BatchBALD, BALD and random on Repeated digits, about a minute on 2 cores.")
    run.add_argument("--config", help="a TOML file with any of the settings below (flags override it)")
    run.add_argument("--dataset", help=f"one of {', '.join(dataset_names())}, a regression set (diabetes, friedman1), or your own: a folder train/<class>/<image> "
                     "(optional test/), a .tar of one, an .npz (x, y[, x_test, y_test, class_names]), a .csv or .parquet (--label-column)")
    run.add_argument("--label-column", dest="label_column", help="your own table: the column holding each row's class")
    run.add_argument("--image-size", dest="image_size", type=int, help="your own images: resized to this square size (default 28)")
    run.add_argument("--rgb", action="store_const", const=True, default=None, help="your own images: keep colour (default grayscale)")
    run.add_argument("--strategy", help="comma-separated strategies, e.g. batchbald,bald,random")
    run.add_argument("--acquisition-size", dest="acquisition_size", type=int, help="points labelled per round (b)")
    run.add_argument("--initial-size", dest="initial_size", type=int, help="class-balanced initial labels (0 allowed)")
    run.add_argument("--budget", type=int, help="stop once this many points are labelled")
    run.add_argument("--target-accuracy", dest="target_accuracy", type=float, help="stop once test accuracy reaches this")
    run.add_argument("--mc-samples", dest="mc_samples", type=int, help="MC-dropout samples K for acquisition (and test, unless --test-mc-samples)")
    run.add_argument("--test-mc-samples", dest="test_mc_samples", type=int)
    run.add_argument("--num-samples", dest="num_samples", type=int, help="BatchBALD joint-entropy samples (default 40000)")
    run.add_argument("--prefilter", type=int, help="BatchBALD: only this many points of highest BALD score compete (large pools)")
    run.add_argument("--pool-subsample", dest="pool_subsample", type=int, help="score a random subset of this many pool points per round")
    run.add_argument("--validation-size", dest="validation_size", type=int)
    run.add_argument("--model", help="mnist_cnn, emnist_cnn, mlp, badge_mlp, resnet18_narrow, vgg16, or your own MODULE:FACTORY "
                     "(package.module:fn or file.py:fn, called with (input_shape, num_classes) or no arguments; default: the paper's)")
    run.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--max-epochs", dest="max_epochs", type=int)
    run.add_argument("--epoch-samples", dest="epoch_samples", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--data-dir", dest="data_dir", help="folder holding <dataset>/<files> (also $BATCHAL_DATA)")
    run.add_argument("--out", help="results folder (default runs/)")
    run.add_argument("--device", help="cpu (default), cuda, cuda:N or auto: where training, scoring and selection run")
    run.add_argument("--posterior", help="mc_dropout (default: K consistent-dropout masks) or ensemble (--members models per round)")
    run.add_argument("--members", type=int, help="ensemble size with --posterior ensemble (default 5)")
    run.add_argument("--stop", help="stop early: stabilizing[:THRESHOLD[:WINDOW]] (Bloodgood & Vijay-Shanker) or plateau[:PATIENCE] (held-out accuracy)")
    run.add_argument("--thresholds", help="accuracies for the labels-needed columns, e.g. 0.9,0.95")
    run.add_argument("--ray", help="run every (strategy, seed) as a task on a Ray cluster: local, auto or HOST:PORT")
    run.add_argument("--cpus-per-run", dest="cpus_per_run", type=float, help="with --ray: CPUs per run (default 1; torch uses as many threads)")
    run.add_argument("--gpus-per-run", dest="gpus_per_run", type=float, help="with --ray: GPUs per run, fractions share one (e.g. 0.25)")
    run.set_defaults(func=cmd_run)

    score = sub.add_parser("score", help="score a pool (images, .npy or Parquet) shard by shard into Parquet, in-process or on Ray",
                           description="Every per-point score of a streamed pool, written as sharded Parquet; rerun to resume.")
    score.add_argument("pool", help="a folder of PNG/JPEG images, a .npy file [N, ...] or Parquet file(s)")
    score.add_argument("--model", required=True, help="a registered model (mnist_cnn, mlp, ...) or MODULE:FACTORY (package.module:fn or file.py:fn)")
    score.add_argument("--weights", help="the model's state dict (torch.save(model.state_dict(), FILE.pt))")
    score.add_argument("--num-classes", dest="num_classes", type=int, help="classes, for registered models")
    score.add_argument("--mc-samples", dest="mc_samples", type=int, default=20, help="MC-dropout samples K (default 20)")
    score.add_argument("--seed", type=int, default=0, help="seed of the K dropout masks (default 0)")
    score.add_argument("--out", required=True, help="output folder")
    score.add_argument("--embeddings", action="store_true", help="also write penultimate features and the prediction (badge, coreset)")
    score.add_argument("--keep-log-probs", dest="keep_log_probs", type=int, help="keep the K x C log-probabilities of the M items of highest BALD (batchbald)")
    score.add_argument("--shard-size", dest="shard_size", type=int, default=4096, help="items per shard (default 4096)")
    score.add_argument("--batch-size", dest="batch_size", type=int, default=256, help="items per forward pass (default 256)")
    score.add_argument("--image-size", dest="image_size", type=int, default=28, help="images are resized to this square size (default 28)")
    score.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale)")
    score.add_argument("--column", help="Parquet: the column holding inputs (arrays) or image paths")
    score.add_argument("--input-shape", dest="input_shape", help="Parquet arrays: reshape each row, e.g. 1,28,28")
    score.add_argument("--ray", help="run on a Ray cluster: local, auto or HOST:PORT (default: in this process)")
    score.add_argument("--workers", type=int, help="with --ray: scoring actors (default: the cluster's CPUs / --cpus-per-worker)")
    score.add_argument("--cpus-per-worker", dest="cpus_per_worker", type=float, default=1.0, help="with --ray: CPUs (and torch threads) per actor")
    score.set_defaults(func=cmd_score)

    select_cmd = sub.add_parser("select", help="select a batch from a scored folder (batchal score's output)")
    select_cmd.add_argument("scored", help="a folder written by batchal score")
    from batchal.distributed.selection import sharded_strategies

    select_cmd.add_argument("--strategy", required=True, help=", ".join(sharded_strategies()))
    select_cmd.add_argument("--batch-size", dest="batch_size", type=int, required=True)
    select_cmd.add_argument("--seed", type=int, default=0)
    select_cmd.add_argument("--beta", type=float, default=1.0, help="power_bald's exponent (default 1)")
    select_cmd.add_argument("--num-samples", dest="num_samples", type=int, default=40_000, help="batchbald's joint-entropy samples")
    select_cmd.add_argument("--ray", help="badge/coreset on a Ray cluster: local, auto or HOST:PORT")
    select_cmd.add_argument("-o", "--output", help="picks file (JSON; default: standard output)")
    select_cmd.set_defaults(func=cmd_select)

    datasets = sub.add_parser("datasets", help="list the data sets and where their files are")
    datasets.add_argument("--data-dir", dest="data_dir")
    datasets.set_defaults(func=cmd_datasets)

    strategies_cmd = sub.add_parser("strategies", help="list the acquisition strategies with their formulas and options")
    strategies_cmd.add_argument("names", nargs="*", help="only these strategies (default: all)")
    strategies_cmd.set_defaults(func=cmd_strategies)

    report = sub.add_parser("report", help="plots and a Markdown summary of finished runs")
    report.add_argument("run_dirs", nargs="+", help="run folders, or folders holding them")
    report.add_argument("--out", default="report", help="output folder (default report/)")
    report.add_argument("--thresholds", help="accuracies for the labels-needed table (default 0.9,0.95)")
    report.set_defaults(func=cmd_report)

    label = sub.add_parser("label", help="label real images in a browser, batch by batch, as the model asks")
    label_sub = label.add_subparsers(dest="label_command", required=True)
    init = label_sub.add_parser("init", help="create a labelling project from a folder of PNG/JPEG images")
    init.add_argument("project", help="the project folder (created; holds project.sqlite)")
    init.add_argument("--images", required=True, help="folder of PNG or JPEG images (searched recursively)")
    init.add_argument("--classes", help="comma-separated class names, e.g. cat,dog")
    init.add_argument("--classes-file", dest="classes_file", help="a label file instead: one class a line, name[,key[,description]]")
    init.add_argument("--overlap", type=int, default=1, help="labels each item needs from different annotators (default 1)")
    init.add_argument("--model", default="mnist_cnn", help="mnist_cnn (default), emnist_cnn, mlp, or your own MODULE:FACTORY (package.module:fn or file.py:fn)")
    init.add_argument("--weights", help="with MODULE:FACTORY: a state dict to start every round's fine-tuning from")
    init.add_argument("--features", help="FEATURES.npy: one row per image (sorted path order; or .npz with 'paths' and 'features') "
                      "from any backbone; a Bayesian MLP head is trained on them")
    init.add_argument("--labels", help="CSV of path,label for images already labelled (paths relative to --images)")
    init.add_argument("--stop-patience", dest="stop_patience", type=int, default=3,
                      help="batches without a better held-out accuracy before the page suggests stopping (default 3)")
    init.add_argument("--strategy", default="batchbald")
    init.add_argument("--batch-size", dest="batch_size", type=int, default=10)
    init.add_argument("--image-size", dest="image_size", type=int, default=28, help="images are resized to this square size")
    init.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale)")
    init.add_argument("--mc-samples", dest="mc_samples", type=int, default=20)
    init.set_defaults(func=cmd_label_init)
    serve_cmd = label_sub.add_parser("serve", help="serve the labelling page (binds 127.0.0.1; prints the access token)")
    serve_cmd.add_argument("project")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8765)
    serve_cmd.add_argument("--token", help="access token (default: a fresh random one)")
    serve_cmd.add_argument("--score-candidates", dest="score_candidates", type=int, default=1000,
                           help="pool items scored per round, a random subset of a larger pool (default 1000: a batch in seconds)")
    serve_cmd.add_argument("--overlap", type=int, help="labels each item needs from different annotators (default: the project's)")
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

    from batchal.integrations.label_studio import add_commands as add_label_studio

    add_label_studio(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        use_threads(args.threads)
    except ValueError as exc:
        print(f"batchal: error: --threads: {exc}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        warnings.showwarning = _one_line_warning
        try:
            return args.func(args)
        except (ValueError, DataError, FileNotFoundError, FileExistsError) as exc:
            print(f"batchal: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("batchal: interrupted; run the same command again to resume from the last complete round", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
