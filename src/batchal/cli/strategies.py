"""`batchal strategies`: every registered strategy with its formula and options."""

from __future__ import annotations

import argparse

from batchal.acquisition.registry import describe, strategies
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    strategies_cmd = sub.add_parser("strategies", help=SUMMARIES["strategies"])
    strategies_cmd.add_argument("names", nargs="*", help="only these strategies (default: all)")
    strategies_cmd.set_defaults(func=cmd_strategies)


def cmd_strategies(args: argparse.Namespace) -> int:
    names = args.names or strategies()
    unknown = [n for n in names if n not in strategies()]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(strategies())}")
    for name in names:
        print(describe(name))
        print()
    return 0

