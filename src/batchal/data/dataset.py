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
