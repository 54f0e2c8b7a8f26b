"""`batchal run`: simulated active learning with a data set's own labels (no arguments: the demonstration)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tomllib
from pathlib import Path

from batchal.acquisition.registry import DEFAULT_STRATEGY, strategies
from batchal.cli.options import split_list
from batchal.cli.progress import Bars, duration, results_table
from batchal.cli.summaries import SUMMARIES
from batchal.data.datasets import dataset_names
from batchal.experiment import COUNTING_NOTE, ExperimentConfig, config_dataset, run_experiment
from batchal.training import TrainConfig

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



def add_parser(sub) -> None:
    run = sub.add_parser("run", help=SUMMARIES["run"],
                         description="Simulated active learning with the data set's own labels. Without arguments: "
                         "BatchBALD, BALD and random on Repeated digits, about a minute on 2 cores.")
    run.add_argument("--config", help="a TOML file with any of the settings below (flags override it)")
    run.add_argument("--dataset", help=f"one of {', '.join(dataset_names())}, a regression set (diabetes, friedman1), or your own: a folder train/<class>/<image> "
                     "(optional test/), a .tar of one, an .npz (x, y[, x_test, y_test, class_names]), a .csv or .parquet (--label-column)")
    run.add_argument("--label-column", dest="label_column", help="your own table: the column holding each row's class")
    run.add_argument("--image-size", dest="image_size", type=int, help="your own images: resized to this square size (default 28)")
    run.add_argument("--rgb", action="store_const", const=True, default=None, help="your own images: keep colour (default grayscale)")
    run.add_argument("--strategy", help="comma-separated strategies, e.g. batchbald,bald,random")
    run.add_argument("--balance", action="store_const", const=True, default=None,
                     help="balance every strategy's batches by predicted class: the strategy ranks 3b candidates and the slots go "
                     "first to the classes with the fewest labels (batchal.acquire.balance_batch); runs go to STRATEGY-balanced-bB-seedS")
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
        settings["strategies"] = split_list(explicit.pop("strategy"), "--strategy")
    if "seeds" in explicit:
        settings["seeds"] = split_list(explicit.pop("seeds"), "--seeds", int)
    if "thresholds" in explicit:
        settings["thresholds"] = split_list(explicit.pop("thresholds"), "--thresholds", float)
    train = dict(settings.pop("train", {}))
    for name in _TRAIN_FIELDS:
        if name in explicit:
            train[name] = explicit.pop(name)
    settings.update(explicit)
    settings["train"] = train
    return settings



def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from batchal.regression_run import REGRESSION_DATASETS, run_from_cli

    regression = settings.get("dataset") in REGRESSION_DATASETS
    names = settings.pop("strategies", [DEFAULT_STRATEGY["regression" if regression else "classification"]])
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
    data = config_dataset(first, progress=download_bar)
    print(f"{first.dataset}: {len(data.train_y)} training points, {len(data.test_y)} test points, {data.num_classes} classes; "
          f"strategies {', '.join(names)}; seeds {', '.join(map(str, seeds))}; results in {out}", flush=True)
    results: dict[str, list[list[dict]]] = {s: [] for s in names}
    rounds_total = (first.budget - first.initial_size + first.acquisition_size - 1) // first.acquisition_size + 1
    # Your own data (a path) gets a folder named after its last part, never the path itself.
    data_folder = first.dataset if first.dataset in dataset_names() else Path(first.dataset).name.replace(".", "-")
    folders = {(s, seed): out / data_folder / f"{s}{'-balanced' if config.balance else ''}-b{config.acquisition_size}-seed{seed}"
               for (s, seed), config in configs.items()}
    if args.ray is not None:
        failed = _run_on_ray(args, configs, folders, results)
    else:
        failed = []
        for n, ((strategy, seed), config) in enumerate(configs.items()):
            bars = Bars(f"{strategy} seed {seed}", rounds_total, interactive)
            started = time.monotonic()
            try:
                rows = run_experiment(config, folders[(strategy, seed)], data=data, progress=bars)
            finally:
                bars.close()
            results[strategy].append(rows)
            if n == 0 and len(configs) > 1 and bars.done:
                # A time hint for the whole command, from the first run measured on this machine
                # (strategies differ in cost: BatchBALD and BADGE select slower than random).
                print(f"(this run took {duration(time.monotonic() - started)}; the other {len(configs) - 1} run(s) about "
                      f"{duration((time.monotonic() - started) * (len(configs) - 1))} more, by this one)", flush=True)
    results = {s: runs for s, runs in results.items() if runs}
    if results:
        print()
        print(results_table(results, first.acquisition_size, thresholds))
        print()
        print(COUNTING_NOTE)
        from batchal.report import write_report

        # One report folder per study (the data, the batch size and the strategies), beside its runs,
        # so that another study in the same --out never overwrites it.
        report_dir = out / data_folder / f"report-b{first.acquisition_size}-{'+'.join(names)}{'-balanced' if first.balance else ''}"
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

