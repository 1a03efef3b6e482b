"""Datasets for `resdsl train`: finding and reading the files, the split, batched augmentation, the loader.

`DATASETS` (the registry of `DatasetRecord`s, see resdsl.data.datasets), `register`, `DataError` and `find_data`
load without torch; the rest imports torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from resdsl.data.datasets import DATASETS, register
from resdsl.data.locate import DataError, find_data
from resdsl.data.record import DatasetRecord

if TYPE_CHECKING:
    from resdsl.data.augment import Augment
    from resdsl.data.dataset import Dataset, load_dataset, pixel_mean, split
    from resdsl.data.images import ImageFiles
    from resdsl.data.loader import Loader

_LAZY = {
    "Augment": "augment",
    "Dataset": "dataset",
    "load_dataset": "dataset",
    "pixel_mean": "dataset",
    "split": "dataset",
    "ImageFiles": "images",
    "Loader": "loader",
}

__all__ = ["DATASETS", "Augment", "DataError", "Dataset", "DatasetRecord", "ImageFiles", "Loader", "find_data",
           "load_dataset", "pixel_mean", "register", "split"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"resdsl.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'resdsl.data' has no attribute '{name}'")
