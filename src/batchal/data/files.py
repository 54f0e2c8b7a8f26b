"""Data files: where they are looked for, how they are verified, read and downloaded.

Search order for a data set's folder (``<root>/<set>/<file>``): ``data_dir`` (the command
line's ``--data-dir``), then ``$BATCHAL_DATA``, then the per-user cache
(``$XDG_CACHE_HOME/batchal`` or ``~/.cache/batchal``), where downloads go.

Checksums are the sha256 of the *uncompressed* content, so a re-gzipped copy still matches.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np


class DataError(ValueError):
    """A data file is missing, corrupt or does not match its checksum."""


@dataclass(frozen=True)
class DataFile:
    name: str  # file name as stored (without .gz for IDX files, which may be gzipped or not)
    sha256: Optional[str]  # of the uncompressed content; None: not known, checked structurally only
    urls: tuple[str, ...] = ()  # download locations (gzipped when the name has no .gz)
    zip_member: Optional[str] = None  # when the URL is a zip archive: the member to extract
    gz_sha256: Optional[str] = None  # of the compressed file, where only that is published
    idx: bool = True  # an IDX file, stored gzipped or not


@dataclass(frozen=True)
class FileSet:
    folder: str
    files: tuple[DataFile, ...] = field(default_factory=tuple)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batchal"


def search_roots(data_dir: Optional[os.PathLike] = None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    if os.environ.get("BATCHAL_DATA"):
        roots.append(Path(os.environ["BATCHAL_DATA"]))
    roots.append(cache_dir())
    return roots


def _candidates(root: Path, fileset: FileSet, file: DataFile) -> list[Path]:
    base = root / fileset.folder / file.name
    return [base, base.with_name(base.name + ".gz")] if file.idx else [base]


def find_file(fileset: FileSet, file: DataFile, roots: list[Path]) -> Optional[Path]:
    for root in roots:
        for path in _candidates(root, fileset, file):
            if path.is_file():
                return path
    return None


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip (by its magic bytes); clear error when corrupt."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path} is not a valid gzip file ({exc}); it is probably truncated or corrupt: delete it and download it again") from exc
    return raw


def verify(path: Path, content: bytes, file: DataFile) -> None:
    if file.sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != file.sha256:
            raise DataError(
                f"{path} does not match its checksum (sha256 of the uncompressed content is {digest}, expected "
                f"{file.sha256}); the file is corrupt, truncated or a different file: delete it and download it again"
            )
    elif file.gz_sha256 is not None and path.suffix == ".gz":
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != file.gz_sha256:
            raise DataError(f"{path} does not match its published checksum (sha256 {digest}, expected {file.gz_sha256}); delete it and download it again")


def parse_idx(content: bytes, path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST / EMNIST format): magic 0x00 0x00 dtype ndim, big-endian sizes."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {content[:4].hex()})")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if content[2] not in dtypes:
        raise DataError(f"{path}: unknown IDX element type 0x{content[2]:02x}")
    ndim = content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{path} is truncated (IDX header cut short)")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    dtype = np.dtype(dtypes[content[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(content) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: the header promises shape {shape} ({expected} bytes) but {len(content) - header} bytes follow")
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)


ProgressFactory = Callable[[str, Optional[int]], Callable[[int], None]]


def _fetch(url: str, destination: Path, progress: Optional[ProgressFactory], timeout: float = 30.0) -> None:
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
        total = response.headers.get("Content-Length")
        update = progress(f"downloading {destination.name}", int(total) if total else None) if progress else None
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            if update:
                update(len(chunk))
    os.replace(partial, destination)


def download(fileset: FileSet, file: DataFile, progress: Optional[ProgressFactory] = None, base_url: Optional[str] = None) -> Path:
    """Download one file into the cache, verify it, and return its path.

    ``base_url`` (or ``$BATCHAL_MIRROR``) replaces the public locations by ``{base_url}/{folder}/{name}``
    (tried as ``name`` and ``name.gz``): a local mirror.
    """
    base_url = base_url or os.environ.get("BATCHAL_MIRROR")
    target_dir = cache_dir() / fileset.folder
    if base_url:
        names = [file.name + ".gz", file.name] if file.idx else [file.name]
        attempts = [(f"{base_url.rstrip('/')}/{fileset.folder}/{n}", n, None) for n in names]
    else:
        attempts = [(url, file.name + (".gz" if url.endswith(".gz") else ""), file.zip_member) for url in file.urls]
    errors = []
    for url, stored_name, member in attempts:
        destination = target_dir / stored_name
        try:
            if member is None:
                _fetch(url, destination, progress)
            else:
                archive = target_dir / Path(url).name
                if not archive.exists():
                    _fetch(url, archive, progress)
                destination = target_dir / Path(member).name
                with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, KeyError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        content = read_bytes(destination)
        try:
            verify(destination, content, file)
        except DataError:
            destination.unlink(missing_ok=True)
            raise
        return destination
    raise DataError("could not download " + file.name + ":\n  " + "\n  ".join(errors))
