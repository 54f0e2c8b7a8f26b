"""`batchal report`: plots and a Markdown summary of finished runs (every label kind)."""

from __future__ import annotations

import argparse

from batchal.cli.options import split_list
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    report = sub.add_parser("report", help=SUMMARIES["report"])
    report.add_argument("run_dirs", nargs="+", help="run folders, or folders holding them")
    report.add_argument("--out", default="report", help="output folder (default report/)")
    report.add_argument("--thresholds", help="accuracies for the labels-needed table (default 0.9,0.95)")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from batchal.report import write_report

    thresholds = split_list(args.thresholds, "--thresholds", float) if args.thresholds else [0.9, 0.95]
    path = write_report(args.run_dirs, args.out, thresholds)
    print(f"report written to {path}")
    return 0

