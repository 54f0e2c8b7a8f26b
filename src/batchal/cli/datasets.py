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
    from batchal.data.datasets import SIZES
    from batchal.regression_run import REGRESSION_SIZES

    status = available_locally(args.data_dir)
    width = max(map(len, dataset_names()))
    print(f"{'data set':<{width}}  {'train':>8}  {'test':>6}  {'classes':>7}  where")
    for name in dataset_names():
        base = name.removeprefix("repeated-")
        train, test, classes, _ = SIZES[name]
        print(f"{name:<{width}}  {train:>8,}  {test:>6,}  {classes:>7}  {status[base]}")
    for name, (rows, what) in REGRESSION_SIZES.items():
        print(f"{name:<{width}}  {rows:>8,} rows, regression: {what}")
    print("your own: a folder train/<class>/<image>, a tar of one, an .npz (x, y) or a CSV/Parquet table: `batchal run --dataset PATH`")
    return 0

