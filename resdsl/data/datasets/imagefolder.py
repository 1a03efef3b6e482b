"""Any image folder: train/<class>/*.jpg and val/<class>/*.jpg, one class per folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.data.record import DatasetRecord

if TYPE_CHECKING:
    from resdsl.data.dataset import Dataset


def load(record: DatasetRecord, root: Path, train: bool) -> Dataset:
    """The images under train/ or val/, classes numbered in the sorted order of train/'s folders."""
    from resdsl.data.dataset import folder_split

    return folder_split(record, root, train)


RECORD = DatasetRecord(
    name="imagefolder", files="train/<class>/*.jpg and val/<class>/*.jpg", markers=("train",), subdirs=("",),
    source="put one folder of images per class under train/ and val/ in one of them",
    load=load, classes=None, image_shape=None)
