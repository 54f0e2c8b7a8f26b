"""Data sets: loaders, file search and verification, downloads."""

from batchal.data.datasets import Dataset, available_locally, dataset_names, load_dataset, repeat_with_noise
from batchal.data.files import DataError

__all__ = ["DataError", "Dataset", "available_locally", "dataset_names", "load_dataset", "repeat_with_noise"]
