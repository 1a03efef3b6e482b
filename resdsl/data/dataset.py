"""`Dataset` (a whole split as tensors), `load_dataset` and the readers the dataset records use, the train/val
`split` and the per-pixel mean."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from resdsl.data.formats import read_cifar_batch, read_idx_pair
from resdsl.data.images import ImageFiles, list_folder
from resdsl.data.locate import DataError, holding_dir, record_of
from resdsl.data.record import DatasetRecord

MEAN_SAMPLE = 2000  # image-folder images averaged for the pixel mean


@dataclass
class Dataset:
    """One split: uint8 images N x C x H x W (an `ImageFiles` for image folders) and int64 labels."""

    images: torch.Tensor | ImageFiles
    labels: torch.Tensor
    classes: int
    name: str

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """C, H, W of one image (an image folder's views; None until their size is chosen)."""
        shape = self.images.shape
        return None if shape is None else (shape[1], shape[2], shape[3])

    def __len__(self) -> int:
        return len(self.labels)

    def sized(self, size: int) -> Dataset:
        """An image folder whose views are `size` x `size`."""
        if not isinstance(self.images, ImageFiles):
            raise TypeError(f"{self.name} is a tensor of images, which have their size")
        return replace(self, images=self.images.sized(size))

    def subset(self, indices: torch.Tensor) -> Dataset:
        """The images at `indices`, in that order."""
        return replace(self, images=self.images[indices], labels=self.labels[indices])


def load_dataset(dataset: str, root: Path, train: bool) -> Dataset:
    """The train or test split of `dataset` from `root` (a directory `find_data` returned); DataError if malformed."""
    record = record_of(dataset)
    return record.load(record, holding_dir(dataset, Path(root)) or Path(root), train)


def cifar_split(record: DatasetRecord, root: Path, names: list[str], label_key: bytes) -> Dataset:
    """The CIFAR python batches `names` in `root`, concatenated."""
    classes = _fixed_classes(record)
    parts = [read_cifar_batch(root / name, label_key, classes) for name in names]
    return Dataset(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), classes, record.name)


def idx_split(record: DatasetRecord, root: Path, prefix: str) -> Dataset:
    """The idx pair `<prefix>-images-idx3-ubyte` and `<prefix>-labels-idx1-ubyte` in `root`."""
    classes = _fixed_classes(record)
    images, labels = read_idx_pair(root / f"{prefix}-images-idx3-ubyte", root / f"{prefix}-labels-idx1-ubyte",
                                   classes)
    return Dataset(images, labels, classes, record.name)


def _fixed_classes(record: DatasetRecord) -> int:
    if record.classes is None:
        raise TypeError(f"the record of {record.name} has no number of classes, which its files' reader needs")
    return record.classes


def folder_split(record: DatasetRecord, root: Path, train: bool) -> Dataset:
    """An image folder's train/ or val/ images, classes numbered in the sorted order of train/'s folders."""
    paths, targets, classes = list_folder(root / "train")
    if not train:
        paths, targets, _ = list_folder(root / "val", classes)
    return Dataset(ImageFiles(paths), torch.tensor(targets, dtype=torch.int64), len(classes), record.name)


def split(dataset: Dataset, val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A deterministic random train/val split holding out `val` images (the paper: 45k/5k), each kept in file order."""
    if not 0 <= val < len(dataset):
        raise DataError(f"cannot hold out {val} validation images from the {len(dataset)} of {dataset.name}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[val:].sort().values), dataset.subset(order[:val].sort().values)


def pixel_mean(dataset: Dataset, workers: int | None = None, decoder: str = "auto") -> torch.Tensor:
    """The per-pixel mean image, C x H x W float32 in [0, 1] units.

    Image folders: the mean of the centre views (see resdsl.data.views) of an evenly spaced sample.
    """
    shape = dataset.shape
    if shape is None:
        raise TypeError(f"{dataset.name}'s views have no size yet, so they have no mean")
    total = torch.zeros(shape, dtype=torch.float64)
    if isinstance(dataset.images, ImageFiles):
        from resdsl.data.loader import Loader
        from resdsl.data.views import EvalView

        step = -(-len(dataset) // MEAN_SAMPLE)
        sample = dataset.subset(torch.arange(0, len(dataset), step))
        loader = Loader(sample, min(64, len(sample)), shuffle=False, drop_last=False, workers=workers,
                        decoder=decoder, view=EvalView("center", shape[-1]))
        chunks = (views[0] for views, _ in loader)
        count = len(sample)
    else:
        chunks = (dataset.images[start:start + 1000] for start in range(0, len(dataset), 1000))
        count = len(dataset)
    for chunk in chunks:
        total += chunk.to(torch.float64).sum(0)
    return (total / (255 * max(1, count))).float()
