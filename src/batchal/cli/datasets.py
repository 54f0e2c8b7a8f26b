"""`batchal datasets`: the data sets and where their files are."""

from __future__ import annotations

import argparse

from batchal.cli.summaries import SUMMARIES
from batchal.data.datasets import available_locally, dataset_names


def add_parser(sub) -> None:
    datasets = sub.add_parser("datasets", help=SUMMARIES["datasets"])
    datasets.add_argument("--data-dir", dest="data_dir")
    datasets.set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    status = available_locally(args.data_dir)
    width = max(map(len, dataset_names()))
    for name in dataset_names():
        base = name.removeprefix("repeated-")
        print(f"{name:<{width}}  {status[base]}")
    return 0

