"""The in-memory data set every loop trains on: train and test tensors and class names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Dataset:
    """Train and test tensors (inputs normalised, float32; labels int64) and class names."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: list[str]
    is_image: bool
    #: The data set's own id of each training item (a file path, a table's row number), when it has
    #: them; run rows then name acquired items by them too (``acquired_ids``).
    train_ids: Optional[list] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def long_tailed(data: Dataset, ratio: float, seed: int = 0) -> Dataset:
    """The training split subsampled to an exponential long tail (as CIFAR-LT is made): class c
    of C keeps a fraction ``ratio ** (c / (C - 1))`` of its items (class 0 all of them, the last
    class ``ratio`` of them), drawn with ``seed``; the test split stays as it is, so accuracy and
    per-class recall are measured on every class alike. ``ratio`` in (0, 1]."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"imbalance must be a ratio in (0, 1] (the rarest class's share of the most common's), got {ratio!r}")
    classes = data.num_classes
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(classes):
        members = (data.train_y == c).nonzero().flatten()
        fraction = ratio ** (c / (classes - 1)) if classes > 1 else 1.0
        count = max(1, round(len(members) * fraction)) if len(members) else 0
        keep.append(members[torch.randperm(len(members), generator=g)[:count]])
    index = torch.sort(torch.cat(keep)).values
    ids = [data.train_ids[i] for i in index.tolist()] if data.train_ids is not None else None
    return Dataset(data.name, data.train_x[index], data.train_y[index], data.test_x, data.test_y, data.class_names, data.is_image, ids)
