"""`batchal compare`: does active learning pay on this data? Several strategies and seeds
simulated on data already labelled, with the verdict, its uncertainty and the plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchal.acquisition.registry import strategies
from batchal.cli.options import split_list
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    cmd = sub.add_parser("compare", help=SUMMARIES["compare"],
                         description="Simulates the loop on data that is already labelled (any source batchal run takes) under "
                         "several strategies and seeds, random always among them, and says with honest uncertainty whether "
                         "a strategy saves labels (report.md, compare.json, plots in --out). Resumable: run it again to finish.")
    cmd.add_argument("dataset", help="a built-in data set, a folder train/<class>/..., a .tar of one, an .npz, a .csv or .parquet")
    cmd.add_argument("--strategy", default="batchbald,badge,margin", help="comma-separated strategies (random is always added)")
    cmd.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    cmd.add_argument("--budget", type=int, default=200, help="labels at the end (default 200)")
    cmd.add_argument("--batch-size", dest="batch_size", default="10", help="one or several acquisition sizes, e.g. 10,40")
    cmd.add_argument("--initial-size", dest="initial_size", type=int, default=20)
    cmd.add_argument("--initial-selection", dest="initial_selection", choices=("balanced", "random"),
                     help="the initial labels: class-balanced (default) or drawn at random (what an imbalanced pool gives you)")
    cmd.add_argument("--model", help="a registered model or your own MODULE:FACTORY (default: the data set's)")
    cmd.add_argument("--mc-samples", dest="mc_samples", type=int, default=20)
    cmd.add_argument("--test-mc-samples", dest="test_mc_samples", type=int, help="MC-dropout samples for the test accuracy (default: --mc-samples)")
    cmd.add_argument("--num-samples", dest="num_samples", type=int, help="BatchBALD joint-entropy samples (default 40000)")
    cmd.add_argument("--prefilter", type=int, help="BatchBALD: only this many points of highest BALD score compete (large pools)")
    cmd.add_argument("--pool-subsample", dest="pool_subsample", type=int, help="score a random subset of this many pool points per round")
    cmd.add_argument("--label-column", dest="label_column", help="your own table: the class column")
    cmd.add_argument("--image-size", dest="image_size", type=int, help="your own images: the square size (default 28)")
    cmd.add_argument("--data-dir", dest="data_dir", help="folder holding <dataset>/<files> (also $BATCHAL_DATA)")
    cmd.add_argument("--max-epochs", dest="max_epochs", type=int, help="training epochs at most (default 30)")
    cmd.add_argument("--epoch-samples", dest="epoch_samples", type=int, help="examples per epoch (default 5056)")
    cmd.add_argument("--imbalance", type=float, help="simulate a long-tailed pool: class c keeps RATIO^(c/(C-1)) of its items "
                     "(the last class RATIO of them, e.g. 0.01); the test set stays as it is")
    cmd.add_argument("--balance", action="store_true", help="also run each strategy wrapped by the class-balancing rule "
                     "(NAME-balanced: the strategy ranks 3b candidates, the classes with the fewest labels get the slots first)")
    cmd.add_argument("--targets", default="0.95,0.99", help="labels are counted to these fractions of the accuracy of a model "
                     "trained on the whole labelled pool (default 0.95,0.99; the first is the verdict's)")
    cmd.add_argument("--workers", type=int, default=1, help="runs in this many processes at once (one thread each)")
    cmd.add_argument("--ray", help="run every run as a task on a Ray cluster: local, auto or HOST:PORT")
    cmd.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    cmd.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from batchal.compare import run_comparison

    names = split_list(args.strategy, "--strategy")
    unknown = [n for n in names if n not in strategies("classification")]
    if unknown:
        raise ValueError(f"--strategy: unknown {', '.join(unknown)}; choose from {', '.join(strategies('classification'))}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    train = {k: v for k, v in (("max_epochs", args.max_epochs), ("epoch_samples", args.epoch_samples)) if v is not None}
    settings = {"budget": args.budget, "initial_size": args.initial_size, "mc_samples": args.mc_samples, "train": train,
                **{k: getattr(args, k) for k in ("model", "label_column", "image_size", "data_dir", "imbalance",
                                                   "num_samples", "prefilter", "pool_subsample", "initial_selection", "test_mc_samples") if getattr(args, k) is not None}}
    if args.balance:
        from batchal.compare import BALANCED

        names += [n + BALANCED for n in names if n != "random"]
    out = Path(args.out)
    summary = run_comparison(args.dataset, names, split_list(args.seeds, "--seeds", int), split_list(args.batch_size, "--batch-size", int),
                             out, settings, progress=lambda line: print(line, flush=True), workers=args.workers, ray_address=args.ray,
                             targets=tuple(split_list(args.targets, "--targets", float)))
    print()
    for sentence in summary["verdict"]:
        print(sentence)
    print(f"\nReport: {out / 'report.md'} ; figures in compare.json", file=sys.stderr)
    return 0
