"""Data sets behind one loader API: ``load_dataset(name, data_dir=None) -> Dataset``.

Built in: ``digits`` (scikit-learn's 8x8 digits, no files), ``mnist``, ``fashion-mnist``,
``emnist-balanced`` (IDX, gzipped or not), ``letter`` (UCI CSV), and ``repeated-<name>`` for any
image set: the train set several times, each copy with its own fixed Gaussian noise (std 0.1,
added after normalising), test set clean (BatchBALD's Repeated MNIST).
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from batchal.data.dataset import Dataset
from batchal.data.image_tar import tar_dataset
from batchal.data.user import is_user_dataset, load_user_dataset
from batchal.data.files import (
    DataError,
    DataFile,
    FileSet,
    ProgressFactory,
    download,
    find_file,
    parse_idx,
    read_bytes,
    search_roots,
    verify,
)




_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_EMNIST_ZIP = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"


def _idx_set(folder: str, prefix: str, checksums: dict[str, str], bases: tuple[str, ...]) -> FileSet:
    return FileSet(folder, tuple(
        DataFile(f"{prefix}{part}", sha, tuple(f"{b}{prefix}{part}.gz" for b in bases))
        for part, sha in checksums.items()
    ))


FILESETS: dict[str, FileSet] = {
    "mnist": _idx_set("mnist", "", {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    }, _MNIST_URLS),
    "fashion-mnist": _idx_set("fashion-mnist", "", {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }, _FASHION_URLS),
    # Only the compressed files' checksums are published for EMNIST.
    "emnist-balanced": FileSet("emnist", tuple(
        DataFile(f"emnist-balanced-{part}", None, (_EMNIST_ZIP,), zip_member=f"gzip/emnist-balanced-{part}.gz", gz_sha256=gz)
        for part, gz in {
            "train-images-idx3-ubyte": "74295e75e4e9fa2c102147460ee7eb763653d5132d883a84fb88932bfb8d2db4",
            "train-labels-idx1-ubyte": "b46d41e5156a0a8aaaa4d18979fdd1588850fa8571018acffd5d93b325a7d6ed",
            "test-images-idx3-ubyte": "117fc12b015e37ea98bfb2cbba3f77c3782c056cdbd219b87abfc8661d7135db",
            "test-labels-idx1-ubyte": "a67cac948379b67270b9a4d0a01c8ec661598accf2f2b1964340b7c83cb175cd",
        }.items()
    )),
    "letter": FileSet("letter", (DataFile(
        "letter-recognition.data", "2b89f3602cf768d3c8355267d2f13f2417809e101fc2b5ceee10db19a60de6e2",
        ("https://archive.ics.uci.edu/ml/machine-learning-databases/letter-recognition/letter-recognition.data",), idx=False,
    ),)),
}


def _locate(name: str, data_dir, download_missing: bool, progress: Optional[ProgressFactory], verify_files: bool) -> list[bytes]:
    fileset = FILESETS[name]
    roots = search_roots(data_dir)
    contents, missing = [], []
    for file in fileset.files:
        path = find_file(fileset, file, roots)
        if path is None:
            missing.append(file)
            contents.append(None)
            continue
        content = read_bytes(path)
        if verify_files:
            verify(path, content, file)
        contents.append(content)
    if missing and download_missing and os.environ.get("BATCHAL_OFFLINE") != "1":
        try:
            for i, file in enumerate(fileset.files):
                if contents[i] is None:
                    contents[i] = read_bytes(download(fileset, file, progress))
            missing = []
        except DataError as exc:
            download_error = str(exc)
        else:
            download_error = None
    else:
        download_error = None
    if missing:
        places = "\n  ".join(str(r / fileset.folder) for r in roots)
        files = ", ".join(f.name + (" (or .gz)" if f.idx else "") for f in missing)
        raise DataError(
            f"data set {name!r}: missing {files}. Put the files in one of:\n  {places}\n"
            f"(--data-dir, $BATCHAL_DATA or the cache)" + (f"; the download failed: {download_error}" if download_error else "")
        )
    return contents


def _normalise_images(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - mean) / std)[:, None, :, :]


def _idx_dataset(name, contents, paths_hint, mean, std, class_names, transpose=False) -> Dataset:
    arrays = [parse_idx(c, Path(f"{name}/{h}")) for c, h in zip(contents, paths_hint)]
    train_images, train_labels, test_images, test_labels = arrays
    for images, labels, which in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{name}: {which} images {images.shape} and labels {labels.shape} do not match (expected N x H x W and N)")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DataError(f"{name}: {which} labels outside 0..{len(class_names) - 1}")
    if transpose:  # EMNIST stores images column-major
        train_images, test_images = train_images.transpose(0, 2, 1), test_images.transpose(0, 2, 1)
    return Dataset(
        name=name,
        train_x=_normalise_images(np.ascontiguousarray(train_images), mean, std),
        train_y=torch.from_numpy(train_labels.astype(np.int64)),
        test_x=_normalise_images(np.ascontiguousarray(test_images), mean, std),
        test_y=torch.from_numpy(test_labels.astype(np.int64)),
        class_names=class_names,
        is_image=True,
    )


def _load_mnist_like(name: str, mean: float, std: float, class_names: list[str]):
    def load(data_dir=None, download_missing=True, progress=None, verify_files=True) -> Dataset:
        contents = _locate(name, data_dir, download_missing, progress, verify_files)
        return _idx_dataset(name, contents, [f.name for f in FILESETS[name].files], mean, std, class_names)

    return load


def _load_emnist(data_dir=None, download_missing=True, progress=None, verify_files=True) -> Dataset:
    contents = _locate("emnist-balanced", data_dir, download_missing, progress, verify_files)
    names = list(string.digits + string.ascii_uppercase + "abdefghnqrt")
    return _idx_dataset("emnist-balanced", contents, [f.name for f in FILESETS["emnist-balanced"].files], 0.1751, 0.3332, names, transpose=True)


def _load_letter(data_dir=None, download_missing=True, progress=None, verify_files=True) -> Dataset:
    (content,) = _locate("letter", data_dir, download_missing, progress, verify_files)
    rows = [line.split(",") for line in content.decode("ascii").strip().splitlines()]
    if not rows or any(len(r) != 17 for r in rows):
        raise DataError("letter-recognition.data: expected 17 comma-separated columns per row (class letter + 16 features)")
    letters = string.ascii_uppercase
    y = torch.tensor([letters.index(r[0]) for r in rows])
    x = torch.tensor([[float(v) for v in r[1:]] for r in rows])
    # The UCI split: the first 16,000 rows train, the last 4,000 test. Standardised by the train set.
    split = 16_000 if len(rows) == 20_000 else int(0.8 * len(rows))
    mean, std = x[:split].mean(0), x[:split].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    return Dataset("letter", x[:split], y[:split], x[split:], y[split:], list(letters), is_image=False)


_CIFAR10_TAR = DataFile("cifar10-jpeg.tar", "839edf26db454edb390deb2877774f3fa7d48f515e4a854e684aa60f148efbb8", idx=False)


def _load_cifar10(data_dir=None, download_missing=True, progress=None, verify_files=True) -> Dataset:
    """CIFAR-10 from the JPEG copy's tar (lossy: accuracies are close to, not equal to, those
    on the original pixels); never downloaded, there is no official tar of JPEGs."""

    roots = search_roots(data_dir)
    path = find_file(FileSet("cifar10-jpeg", (_CIFAR10_TAR,)), _CIFAR10_TAR, roots)
    if path is None:
        places = "\n  ".join(str(r / "cifar10-jpeg") for r in roots)
        raise DataError(f"data set 'cifar10': missing cifar10-jpeg.tar. Put it in one of:\n  {places}")
    if verify_files:
        verify(path, path.read_bytes(), _CIFAR10_TAR)
    return tar_dataset(path, "cifar10")


def _load_digits(data_dir=None, download_missing=True, progress=None, verify_files=True) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target)
    mean, std = x_train.mean(), x_train.std()
    to_x = lambda a: torch.from_numpy((a - mean) / std)[:, None, :, :]
    return Dataset("digits", to_x(x_train), torch.from_numpy(y_train.astype(np.int64)), to_x(x_test), torch.from_numpy(y_test.astype(np.int64)), [str(d) for d in range(10)], is_image=True)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist_like("mnist", 0.1307, 0.3081, [str(d) for d in range(10)]),
    "fashion-mnist": _load_mnist_like("fashion-mnist", 0.2860, 0.3530, ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
    "emnist-balanced": _load_emnist,
    "letter": _load_letter,
    "cifar10": _load_cifar10,
}

REPEATED_PREFIX = "repeated-"


#: What each built-in classification data set holds: training points, test points, classes, one input.
#: (EMNIST Balanced's figures are its published split: it is not available on the development machine;
#: tests/test_data.py checks the others against the loaded data where the files are present.)
SIZES = {
    "digits": (1_437, 360, 10, "8 x 8 grey image (scikit-learn's digits, a seeded 80/20 split)"),
    "mnist": (60_000, 10_000, 10, "28 x 28 grey image"),
    "fashion-mnist": (60_000, 10_000, 10, "28 x 28 grey image"),
    "emnist-balanced": (112_800, 18_800, 47, "28 x 28 grey image"),
    "letter": (16_000, 4_000, 26, "16 numeric features (UCI letter recognition)"),
    "cifar10": (50_000, 10_000, 10, "32 x 32 colour image (a lossy JPEG copy here)"),
    "repeated-digits": (4_311, 360, 10, "digits' training set 3 times, each copy with its own noise"),
    "repeated-mnist": (180_000, 10_000, 10, "MNIST's training set 3 times, each copy with its own noise"),
    "repeated-fashion-mnist": (180_000, 10_000, 10, "Fashion-MNIST's training set 3 times, each copy with its own noise"),
    "repeated-emnist-balanced": (338_400, 18_800, 47, "EMNIST Balanced's training set 3 times, each copy with its own noise"),
}


def dataset_names() -> list[str]:
    """Every name ``load_dataset`` accepts."""
    return list(LOADERS) + [REPEATED_PREFIX + n for n in ("digits", "mnist", "fashion-mnist", "emnist-balanced")]


def repeat_with_noise(dataset: Dataset, copies: int = 3, noise_std: float = 0.1, seed: int = 0) -> Dataset:
    """The train set ``copies`` times, copy i with its own fixed Gaussian noise (seeded by i); test set clean."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    parts = []
    for i in range(copies):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        parts.append(dataset.train_x + noise_std * torch.randn(dataset.train_x.shape, generator=g))
    return Dataset(
        name=REPEATED_PREFIX + dataset.name,
        train_x=torch.cat(parts),
        train_y=dataset.train_y.repeat(copies),
        test_x=dataset.test_x,
        test_y=dataset.test_y,
        class_names=dataset.class_names,
        is_image=dataset.is_image,
    )


def load_dataset(
    name: str,
    data_dir: Optional[os.PathLike] = None,
    *,
    download_missing: bool = True,
    progress: Optional[ProgressFactory] = None,
    verify_files: bool = True,
    copies: int = 3,
    noise_std: float = 0.1,
    label_column: Optional[str] = None,
    image_size: int = 28,
    rgb: bool = False,
) -> Dataset:
    """Load a data set by name (see ``dataset_names()``); files are found, verified and, when
    missing, downloaded as ``batchal.data.files`` describes. A path loads your own data
    (``batchal.data.user``: an image folder or tar, .npz, .csv or .parquet)."""

    if isinstance(name, str) and name not in dataset_names() and is_user_dataset(name):
        return load_user_dataset(name, label_column=label_column, image_size=image_size, rgb=rgb)
    if not isinstance(name, str) or name not in dataset_names():
        raise ValueError(f"dataset must be one of {', '.join(dataset_names())}; got {name!r}")
    if name.startswith(REPEATED_PREFIX):
        base = LOADERS[name[len(REPEATED_PREFIX):]](data_dir, download_missing, progress, verify_files)
        return repeat_with_noise(base, copies=copies, noise_std=noise_std)
    return LOADERS[name](data_dir, download_missing, progress, verify_files)


def available_locally(data_dir: Optional[os.PathLike] = None, check: bool = True) -> dict[str, str]:
    """For each base data set: where its files are, 'built in', 'missing', or 'corrupt: why'.

    check: read every file found and verify it (checksum and structure), so that a truncated or
    damaged download is reported here rather than at the first run.
    """
    status = {"digits": "built in (scikit-learn)"}
    roots = search_roots(data_dir)
    tar = find_file(FileSet("cifar10-jpeg", (_CIFAR10_TAR,)), _CIFAR10_TAR, roots)
    status["cifar10"] = (str(tar.parent) + " (a JPEG copy: lossy)") if tar else "missing (never downloaded: put cifar10-jpeg.tar there)"
    for name, fileset in FILESETS.items():
        paths = [find_file(fileset, f, roots) for f in fileset.files]
        if not all(paths):
            status[name] = "missing (downloaded on first use)"
            continue
        status[name] = str(paths[0].parent)
        if check:
            try:
                for path, file in zip(paths, fileset.files):
                    content = read_bytes(path)
                    verify(path, content, file)
                    if file.idx:
                        parse_idx(content, path)
            except DataError as exc:
                status[name] = f"corrupt: {exc}"
    return status
