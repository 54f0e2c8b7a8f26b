"""Pools that stream instead of loading: a folder of images, a NumPy ``.npy`` file (memory-mapped)
or Parquet files, read one range of positions at a time.

Every item has a position (0..N-1, a fixed order) and a stable id that every output carries:
its path relative to the folder for images (positions in sorted path order), its row number
for ``.npy`` and Parquet arrays (rows of the files in sorted file name order), and the path
as written for a Parquet image-path column. Nothing reads more than the range asked for, so a
pool need not fit in one process's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from batchal.data.files import DataError
from batchal.data.images import IMAGE_SUFFIXES, load_image


@dataclass
class ImageOptions:
    """How image files become model inputs."""

    image_size: int = 28
    grayscale: bool = True


class Pool:
    """A pool source: ``len(pool)`` items, ``ids(start, stop)`` and ``read(start, stop)``."""

    kind = "pool"

    def __len__(self) -> int:
        raise NotImplementedError

    def ids(self, start: int, stop: int) -> list[str]:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Model inputs of positions start..stop-1 as a float32 tensor [stop - start, ...]."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "items": len(self)}


def _unreadable(path: Path) -> Optional[str]:
    """Why the image cannot be used (None: its header opens and its data verify), without decoding it."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("reading images needs Pillow: pip install -c constraints.txt -e '.[score]'") from None
    try:
        if not path.is_file():
            return "not a regular file"
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # Pillow raises many types for a damaged file; each is a reason to skip it
        return f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


class ImageFolderPool(Pool):
    kind = "images"

    def __init__(self, path: Path, options: ImageOptions, exclude=(), check: bool = False):
        """exclude: relative paths left out (a list made earlier by ``check``); check: open every
        image's header and leave out the ones that do not open (``self.skipped``, with why)."""
        self.path, self.options = path, options
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in files:
                if name.lower().endswith(IMAGE_SUFFIXES):
                    found.append((Path(root) / name).relative_to(path).as_posix())
        if not found:
            raise DataError(f"{path}: no PNG or JPEG images found (searched recursively)")
        excluded = set(exclude)
        self.skipped: list[dict] = []
        kept = []
        for p in sorted(found):
            if p in excluded:
                continue
            why = _unreadable(path / p) if check else None
            if why:
                self.skipped.append({"id": p, "reason": why})
            else:
                kept.append(p)
        if not kept:
            raise DataError(f"{path}: none of its {len(found)} images can be read (e.g. {self.skipped[0]['id']}: {self.skipped[0]['reason']})")
        self._paths = kept

    def __len__(self) -> int:
        return len(self._paths)

    def ids(self, start, stop):
        return self._paths[start:stop]

    def read(self, start, stop):
        return torch.stack([load_image(self.path / p, self.options.image_size, self.options.grayscale) for p in self._paths[start:stop]])


class NpyPool(Pool):
    kind = "npy"

    def __init__(self, path: Path):
        self.path = path
        try:
            self._array = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({exc})") from None
        if self._array.ndim < 2 or self._array.dtype.kind not in "fiu":
            raise DataError(f"{path}: expected a numeric array [N, ...] of inputs, got shape {self._array.shape}, dtype {self._array.dtype}")

    def __len__(self):
        return self._array.shape[0]

    def ids(self, start, stop):
        return [str(i) for i in range(start, min(stop, len(self)))]

    def read(self, start, stop):
        return torch.from_numpy(np.array(self._array[start:stop], dtype=np.float32))


#: Rows decoded at a time from a Parquet row group.
BATCH_ROWS = 4096


class ParquetPool(Pool):
    """Parquet files (one file, or every ``*.parquet`` under a folder in sorted order): ``column``
    holds either arrays of numbers (a list column, reshaped to ``input_shape`` when given) or
    image paths (strings, relative to the file's folder)."""

    kind = "parquet"

    def __init__(self, path: Path, column: Optional[str], options: ImageOptions, input_shape: Optional[tuple] = None):
        import pyarrow.parquet as pq

        self.path, self.options, self.input_shape = path, options, input_shape
        self._files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not self._files:
            raise DataError(f"{path}: no .parquet files found")
        self._meta = [pq.ParquetFile(f) for f in self._files]
        schema = self._meta[0].schema_arrow
        if column is None:
            if len(schema.names) != 1:
                raise ValueError(f"{path} has columns {', '.join(schema.names)}; name the one holding the inputs with --column")
            column = schema.names[0]
        if column not in schema.names:
            raise ValueError(f"--column {column!r} is not in {self._files[0]} (columns: {', '.join(schema.names)})")
        self.column = column
        import pyarrow as pa

        kind = schema.field(column).type
        self.paths = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if not self.paths and not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
            raise ValueError(f"--column {column!r} holds {kind}; expected a list of numbers (one input per row) or image paths (strings)")
        self._counts = [m.metadata.num_rows for m in self._meta]
        self._starts = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)

    def __len__(self):
        return int(self._starts[-1])

    def _rows(self, start: int, stop: int) -> list:
        """The column's values at positions start..stop-1, reading only the row groups needed."""
        values = []
        for f, meta in enumerate(self._meta):
            lo, hi = max(start, int(self._starts[f])), min(stop, int(self._starts[f + 1]))
            if lo >= hi:
                continue
            offset, first = int(self._starts[f]), 0
            for g in range(meta.num_row_groups):
                rows = meta.metadata.row_group(g).num_rows
                g_lo, g_hi = offset + first, offset + first + rows
                first += rows
                if g_hi <= lo or g_lo >= hi:
                    continue
                # By record batches of at most BATCH_ROWS rows: a file written as one big row group
                # (the usual way) is not read whole for every shard, only up to the shard's end.
                at = g_lo
                for batch in meta.iter_batches(batch_size=min(BATCH_ROWS, max(1, hi - lo)), row_groups=[g], columns=[self.column]):
                    b_lo, b_hi = at, at + batch.num_rows
                    at = b_hi
                    if b_hi <= lo:
                        continue
                    values.extend(batch.column(0).slice(max(lo, b_lo) - b_lo, min(hi, b_hi) - max(lo, b_lo)).to_pylist())
                    if b_hi >= hi:
                        break
        return values

    def _where(self, position: int) -> str:
        f = int(np.searchsorted(self._starts, position, side="right")) - 1
        return f"{self._files[f]}, row {position - int(self._starts[f])} (pool position {position})"

    def ids(self, start, stop):
        if self.paths:
            return [str(v) for v in self._rows(start, stop)]
        return [str(i) for i in range(start, min(stop, len(self)))]

    def read(self, start, stop):
        rows = self._rows(start, stop)
        if self.paths:
            base = self._files[0].parent
            return torch.stack([load_image(base / p, self.options.image_size, self.options.grayscale) for p in rows])
        expected = int(np.prod(self.input_shape)) if self.input_shape else (len(rows[0]) if rows and rows[0] is not None else None)
        for n, row in enumerate(rows):
            if row is None or len(row) != expected or any(v is None for v in row):
                what = "empty (null)" if row is None else ("holds a null" if any(v is None for v in row) else f"has {len(row)} values")
                raise DataError(f"{self._where(start + n)}: column {self.column!r} {what}; expected {expected} numbers"
                                + (f" (--input-shape {','.join(map(str, self.input_shape))})" if self.input_shape else " (as the shard's first row)"))
        x = torch.tensor(np.asarray(rows, dtype=np.float32))
        return x.view(len(rows), *self.input_shape) if self.input_shape else x


def open_pool(path, *, column: Optional[str] = None, options: Optional[ImageOptions] = None, input_shape: Optional[tuple] = None,
              exclude=(), check: bool = False) -> Pool:
    """The pool at ``path``: a folder of images, a folder or file of Parquet, or a ``.npy`` file.
    For image folders: ``check`` leaves out the images that do not open (listed in ``pool.skipped``),
    ``exclude`` the ones a check listed before."""
    path = Path(path)
    options = options or ImageOptions()
    if not path.exists():
        raise ValueError(f"pool {path}: no such file or folder")
    if path.is_file() and path.suffix == ".npy":
        return NpyPool(path)
    if path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
        return ParquetPool(path, column, options, input_shape)
    if path.is_dir():
        return ImageFolderPool(path, options, exclude=exclude, check=check)
    raise ValueError(f"pool {path}: expected a folder of PNG/JPEG images, a .npy file or Parquet files")
