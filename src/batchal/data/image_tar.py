"""Image data sets stored as a tar of image files laid out ``train/<class>/<file>`` and
``test/<class>/<file>`` (the shared CIFAR-10 JPEG copy): read straight from the tar with
``tarfile`` and Pillow, never unpacked. Classes are the folder names, sorted; items are in the
tar's member order sorted by path, so the same tar gives the same indices everywhere.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from batchal.data.dataset import Dataset
from batchal.data.files import DataError


def read_image_tar(path: Path, grayscale: bool = False, image_size=None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, list[str]]], list[str]]:
    """{"train": (uint8 images N x H x W x C, labels N, member names), "test": ...} and the class
    names. Members that are not ``split/class/file`` images are ignored; an image that does not
    decode, or (without ``image_size``, which resizes every image to that square) whose size
    differs from the first, raises ``DataError`` naming the member."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ValueError("reading an image tar needs Pillow: pip install -e '.[label]'") from None
    try:
        archive = tarfile.open(path)
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{path}: not a readable tar file ({exc})") from None
    members: dict[str, list[tuple[str, str, tarfile.TarInfo]]] = {"train": [], "test": []}
    with archive:
        for info in archive.getmembers():
            parts = info.name.strip("./").split("/")
            if not info.isfile() or len(parts) < 3 or parts[-3] not in members:
                continue
            if Path(parts[-1]).suffix.lower() not in (".png", ".jpg", ".jpeg"):
                continue
            members[parts[-3]].append((info.name, parts[-2], info))
        classes = sorted({c for split in members.values() for _, c, _ in split})
        if not members["train"] or len(classes) < 2:
            raise DataError(f"{path}: expected images at train/<class>/<file> (two classes at least); found {len(members['train'])} training images")
        out, shape = {}, None
        for split, items in members.items():
            items.sort(key=lambda m: m[0])
            images, labels = [], []
            for name, cls, info in items:
                try:
                    with Image.open(io.BytesIO(archive.extractfile(info).read())) as img:
                        img = img.convert("L" if grayscale else "RGB")
                        if image_size is not None:
                            img = img.resize((image_size, image_size), Image.BILINEAR)
                        array = np.asarray(img, dtype=np.uint8)
                except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                    raise DataError(f"{path}: member {name} is not a readable image ({exc})") from None
                shape = shape or array.shape
                if array.shape != shape:
                    raise DataError(f"{path}: member {name} is {array.shape[:2]} pixels where the first image is {shape[:2]}; "
                                    "every image of a tar data set must have the same size")
                images.append(array)
                labels.append(classes.index(cls))
            empty = np.zeros((0, *(shape or (1, 1, 1))), dtype=np.uint8)
            out[split] = (np.stack(images) if images else empty, np.asarray(labels, dtype=np.int64), [m[0] for m in items])
    return out, classes


def tar_dataset(path: Path, name: str, grayscale: bool = False, image_size=None):
    """A ``Dataset``: float32 N x C x H x W, normalised per channel by the training images'
    mean and standard deviation."""

    splits, classes = read_image_tar(path, grayscale, image_size)
    train, test = splits["train"], splits["test"]
    if len(test[0]) == 0:
        raise DataError(f"{path}: no test/<class>/<file> images; the tar needs a test split")
    to_float = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).reshape(len(a), *a.shape[1:3], -1).permute(0, 3, 1, 2)
    train_x, test_x = to_float(train[0]), to_float(test[0])
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return Dataset(name, ((train_x - mean) / std).contiguous(), torch.from_numpy(train[1]), ((test_x - mean) / std).contiguous(),
                   torch.from_numpy(test[1]), classes, is_image=True, train_ids=list(train[2]))
