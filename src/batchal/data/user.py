"""Your own data set in ``batchal run --dataset PATH``.

Accepted, by what the path is:

- a folder ``train/<class>/<image>`` (optional ``test/<class>/<image>``): PNG/JPEG images, each
  resized to ``image_size`` (28 by default), grayscale unless ``rgb``, scaled by the training
  images' per-channel mean and standard deviation; item ids are the paths inside the folder;
- a ``.tar`` of such a folder (read in place, never unpacked; ``batchal.data.image_tar``);
- an ``.npz`` with ``x`` and ``y`` (optional ``x_test``, ``y_test``, ``class_names``); item ids
  are row numbers;
- a ``.csv`` or ``.parquet`` table with ``label_column``: every other column must be numeric
  (text columns are refused by name: encode them yourself, the choice is yours to make), and
  features are standardised by the training split's mean and standard deviation; item ids are
  row numbers (0 = the first row after the header).

Run rows name acquired items both by training-set index (``acquired``) and by these ids
(``acquired_ids``); a tar's ids are its member names.

Without a test split, a stated one is made: a stratified 20% of the rows (seed 0).
``fingerprint`` summarises the data (sizes, class counts, a content hash) so that a run folder
can refuse to resume on different data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from batchal.data.dataset import Dataset
from batchal.data.files import DataError
from batchal.data.image_tar import tar_dataset
from batchal.data.images import IMAGE_SUFFIXES, channel_stats, load_image

TEST_FRACTION = 0.2


def is_user_dataset(name) -> bool:
    return isinstance(name, str) and (Path(name).suffix.lower() in (".npz", ".csv", ".parquet", ".tar") or Path(name).is_dir())


def load_user_dataset(path, label_column: Optional[str] = None, image_size: int = 28, rgb: bool = False):

    path = Path(path)
    if not path.exists():
        raise ValueError(f"--dataset {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".tar":

        return tar_dataset(path, str(path), grayscale=not rgb, image_size=image_size)
    if suffix == ".npz":
        return _npz(path)
    if suffix in (".csv", ".parquet"):
        return _table(path, label_column)
    if path.is_dir():
        return _image_folder(path, image_size, rgb)
    raise ValueError(f"--dataset {path}: expected a folder train/<class>/..., a .tar of one, an .npz, a .csv or a .parquet file")


def _split(x: np.ndarray, y: np.ndarray, ids: Optional[np.ndarray] = None):
    """x_train, x_test, y_train, y_test, ids_train (the training rows' ids; row numbers by default)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    ids = np.arange(len(y)) if ids is None else np.asarray(ids)
    x_train, x_test, y_train, y_test, ids_train, _ = train_test_split(x, y, ids, test_size=TEST_FRACTION, random_state=0, stratify=stratify)
    return x_train, x_test, y_train, y_test, ids_train.tolist()


def _npz(path: Path):

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--dataset {path}: not a readable .npz ({exc})") from None
    for key in ("x", "y"):
        if key not in data:
            raise ValueError(f"--dataset {path}: no array {key!r} (arrays: {', '.join(data.files)}); expected x, y and optionally x_test, y_test, class_names")
    x, y = data["x"], data["y"]
    if len(x) != len(y):
        raise ValueError(f"--dataset {path}: x has {len(x)} rows but y has {len(y)}")
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise ValueError(f"--dataset {path}: y must hold class indices 0..C-1, got dtype {y.dtype}")
    if ("x_test" in data) != ("y_test" in data):
        raise ValueError(f"--dataset {path}: give both x_test and y_test, or neither")
    if "x_test" in data:
        x_train, y_train, x_test, y_test, ids = x, y, data["x_test"], data["y_test"], list(range(len(y)))
        if len(x_test) != len(y_test):
            raise ValueError(f"--dataset {path}: x_test has {len(x_test)} rows but y_test has {len(y_test)}")
    else:
        x_train, x_test, y_train, y_test, ids = _split(x, y)
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    names = [str(c) for c in data["class_names"]] if "class_names" in data else [str(c) for c in range(num_classes)]
    if len(names) < num_classes:
        raise ValueError(f"--dataset {path}: {len(names)} class_names for labels up to {num_classes - 1}")
    to_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return Dataset(str(path), to_x(x_train), torch.from_numpy(y_train.astype(np.int64)), to_x(x_test),
                   torch.from_numpy(np.asarray(y_test).astype(np.int64)), names, is_image=x.ndim == 4, train_ids=ids)


def _read_columns(path: Path) -> dict[str, list]:
    """A CSV (the standard library) or Parquet (pyarrow) table as {column: values}."""
    if path.suffix.lower() == ".csv":
        import csv

        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except UnicodeDecodeError as exc:
            raise ValueError(f"--dataset {path}: not UTF-8 text ({exc})") from None
        if len(rows) < 2:
            raise ValueError(f"--dataset {path}: expected a header row and at least one data row")
        header, body = rows[0], rows[1:]
        bad = next((n for n, r in enumerate(body, start=2) if len(r) != len(header)), None)
        if bad is not None:
            raise ValueError(f"--dataset {path}, line {bad}: {len(body[bad - 2])} fields where the header has {len(header)}")
        return {name: [r[i] for r in body] for i, name in enumerate(header)}
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow: pip install -c constraints.txt -e '.[score]'") from None
    try:
        return pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ValueError(f"--dataset {path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def _numeric(values: list) -> Optional[np.ndarray]:
    """The column as float64, or None when a value is text (empty cells are NaN)."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None or v == "":
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
    return out


def _table(path: Path, label_column: Optional[str]):

    if label_column is None:
        raise ValueError(f"--dataset {path}: a table needs --label-column NAME (the column holding each row's class)")
    columns = _read_columns(path)
    if label_column not in columns:
        raise ValueError(f"--dataset {path}: no column {label_column!r} (columns: {', '.join(map(str, columns))})")
    labels = [str(v) if v is not None else "" for v in columns.pop(label_column)]
    if "" in labels:
        raise ValueError(f"--dataset {path}: column {label_column!r} is empty in row {labels.index('')}")
    numeric = {name: _numeric(values) for name, values in columns.items()}
    text = [name for name, values in numeric.items() if values is None]
    if text:
        raise ValueError(f"--dataset {path}: column(s) {', '.join(text)} are not numeric; encode them (one-hot, ordinal) "
                         "or drop them first: batchal does not guess an encoding")
    if not numeric:
        raise ValueError(f"--dataset {path}: no feature columns besides {label_column!r}")
    x = np.stack(list(numeric.values()), axis=1)
    if np.isnan(x).any():
        row, col = np.argwhere(np.isnan(x))[0]
        raise ValueError(f"--dataset {path}: row {row}, column {list(numeric)[col]!r} is empty; fill or drop it first")
    names = sorted(set(labels))
    y = np.array([names.index(v) for v in labels], dtype=np.int64)
    x_train, x_test, y_train, y_test, ids = _split(x, y)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    to_x = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))
    return Dataset(str(path), to_x(x_train), torch.from_numpy(y_train), to_x(x_test), torch.from_numpy(y_test), names, is_image=False,
                   train_ids=ids)


def _image_folder(path: Path, image_size: int, rgb: bool):

    train = path / "train"
    if not train.is_dir():
        raise ValueError(f"--dataset {path}: expected a folder train/<class>/<image> (and optionally test/<class>/<image>)")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(f"--dataset {path}: train/ holds {len(classes)} class folder(s); two at least")

    def read(split: Path):
        xs, ys, names = [], [], []
        for c, name in enumerate(classes):
            folder = split / name
            files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            readable = 0
            for f in files:
                try:
                    xs.append(load_image(f, image_size, not rgb, mean=0.0, std=1.0))
                    ys.append(c)
                    names.append(f.relative_to(path).as_posix())
                    readable += 1
                except DataError:
                    continue
            if split == train and readable == 0:
                raise ValueError(f"--dataset {path}: the class folder {folder.relative_to(path)} has no readable image")
        return (torch.stack(xs) if xs else torch.zeros(0)), torch.tensor(ys, dtype=torch.long), names

    x_train, y_train, ids = read(train)
    if (path / "test").is_dir():
        x_test, y_test, _ = read(path / "test")
    else:
        a, b, c, d, ids = _split(x_train.numpy(), y_train.numpy(), np.asarray(ids, dtype=object))
        x_train, x_test, y_train, y_test = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c), torch.from_numpy(d)
    mean, std = channel_stats(x_train)
    return Dataset(str(path), (x_train - mean) / std, y_train, (x_test - mean) / std, y_test, classes, is_image=True, train_ids=ids)


def fingerprint(data) -> dict:
    """Sizes, class counts and a sha256 of the training inputs and labels (first 16 hex digits)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.train_x.numpy()).tobytes())
    digest.update(np.ascontiguousarray(data.train_y.numpy()).tobytes())
    return {"train": int(len(data.train_y)), "test": int(len(data.test_y)),
            "class_counts": np.bincount(data.train_y.numpy(), minlength=data.num_classes).tolist(),
            "sha256": digest.hexdigest()[:16]}
