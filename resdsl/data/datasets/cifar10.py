"""CIFAR-10: 60,000 32x32 colour images in 10 classes, python pickle batches."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.data.record import DatasetRecord

if TYPE_CHECKING:
    from resdsl.data.dataset import Dataset


def load(record: DatasetRecord, root: Path, train: bool) -> Dataset:
    from resdsl.data.dataset import cifar_split

    return cifar_split(record, root, [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"], b"labels")


RECORD = DatasetRecord(
    name="cifar10", files="data_batch_1 to data_batch_5 and test_batch", markers=("data_batch_1",),
    subdirs=("", "cifar-10-batches-py"),
    source="download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it into one of them",
    load=load, classes=10, image_shape=(3, 32, 32))
