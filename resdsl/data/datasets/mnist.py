"""MNIST: 70,000 28x28 greyscale handwritten digits, idx files (also the reader of the other idx datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.data.record import DatasetRecord

if TYPE_CHECKING:
    from resdsl.data.dataset import Dataset

IDX_FILES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
             "(gzipped or not)")
IDX_MARKERS = ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")


def load(record: DatasetRecord, root: Path, train: bool) -> Dataset:
    """The split from `train-*` or `t10k-*` idx files."""
    from resdsl.data.dataset import idx_split

    return idx_split(record, root, "train" if train else "t10k")


RECORD = DatasetRecord(
    name="mnist", files=IDX_FILES, markers=IDX_MARKERS, subdirs=("", "raw", "MNIST/raw"),
    source="put the four idx files from https://yann.lecun.com/exdb/mnist/ into one of them",
    load=load, classes=10, image_shape=(1, 28, 28))
