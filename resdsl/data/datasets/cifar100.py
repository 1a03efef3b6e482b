"""CIFAR-100: 60,000 32x32 colour images in 100 fine classes, python pickle files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.data.record import DatasetRecord

if TYPE_CHECKING:
    from resdsl.data.dataset import Dataset


def load(record: DatasetRecord, root: Path, train: bool) -> Dataset:
    from resdsl.data.dataset import cifar_split

    return cifar_split(record, root, ["train" if train else "test"], b"fine_labels")


RECORD = DatasetRecord(
    name="cifar100", files="train, test and meta", markers=("train",), subdirs=("", "cifar-100-python"),
    source="download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and unpack it into one of them",
    load=load, classes=100, image_shape=(3, 32, 32))
