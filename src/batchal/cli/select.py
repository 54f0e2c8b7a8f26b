"""`batchal select`: a batch from a scored folder, in-process or with --ray."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from batchal.acquisition.registry import get_strategy
from batchal.cli.options import needs_pyarrow
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    select_cmd = sub.add_parser("select", help=SUMMARIES["select"])
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


def cmd_select(args: argparse.Namespace) -> int:
    needs_pyarrow("select")
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

