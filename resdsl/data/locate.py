"""Where a dataset's files live: `find_data` and the `DataError` every data problem raises (no torch)."""

from __future__ import annotations

import os
from pathlib import Path

DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "imagenet", "imagefolder")
IMAGE_FOLDERS = ("imagenet", "imagefolder")  # train/<class>/*.jpg and val/<class>/*.jpg
# Choices the CLI checks before it imports torch: image decoders and testing protocols.
DECODERS = ("auto", "torchvision", "pil", "nvjpeg")
PROTOCOLS = ("center", "10crop", "multiscale")

# The file (or folder) whose presence says a directory holds the dataset, and the
# sub-folders the usual archives unpack to.
MARKERS = {
    "cifar10": ("data_batch_1",),
    "cifar100": ("train",),
    "fashion-mnist": ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"),
    "mnist": ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"),
    "imagenet": ("train",),
    "imagefolder": ("train",),
}
SUBDIRS = {
    "cifar10": ("", "cifar-10-batches-py"),
    "cifar100": ("", "cifar-100-python"),
    "fashion-mnist": ("", "raw", "FashionMNIST/raw"),
    "mnist": ("", "raw", "MNIST/raw"),
    "imagenet": ("",),
    "imagefolder": ("",),
}
IDX = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
       "(gzipped or not)")
FILES = {
    "cifar10": "data_batch_1 to data_batch_5 and test_batch",
    "cifar100": "train, test and meta",
    "fashion-mnist": IDX,
    "mnist": IDX,
    "imagenet": "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    "imagefolder": "train/<class>/*.jpg and val/<class>/*.jpg",
}
SOURCES = {
    "cifar10": "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it into one of them",
    "cifar100": "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and unpack it into one of them",
    "fashion-mnist": "install the Debian package with `sudo apt-get install dataset-fashion-mnist` (it puts them in "
    "/usr/share/datasets/fashion-mnist) or put the idx files from "
    "https://github.com/zalandoresearch/fashion-mnist into one of them",
    "mnist": "put the four idx files from https://yann.lecun.com/exdb/mnist/ into one of them",
    "imagenet": "unpack ILSVRC2012 into one of them, its validation images sorted into one folder per class",
    "imagefolder": "put one folder of images per class under train/ and val/ in one of them",
}
SYSTEM_COPIES = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


class DataError(Exception):
    """Missing or malformed data; `str(error)` is one plain sentence naming the paths and what to do."""


def check_name(dataset: str) -> None:
    """Raise DataError unless `dataset` is one of DATASETS."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")


def holding_dir(dataset: str, root: Path) -> Path | None:
    """The directory at or under `root` holding `dataset`'s files, or None."""
    for sub in SUBDIRS[dataset]:
        candidate = root / sub if sub else root
        if any((candidate / marker).exists() for marker in MARKERS[dataset]):
            return candidate
    return None


def candidates(dataset: str, data: str | Path | None) -> list[Path]:
    """The directories searched: `data` alone if given, else $RESDSL_DATA/<dataset>, ~/.cache/resdsl/<dataset>,
    then the system copy, in that order."""
    if data is not None:
        return [Path(data).expanduser()]
    paths = []
    if os.environ.get("RESDSL_DATA"):
        paths.append(Path(os.environ["RESDSL_DATA"]).expanduser() / dataset)
    paths.append(Path.home() / ".cache" / "resdsl" / dataset)
    if dataset in SYSTEM_COPIES:
        paths.append(SYSTEM_COPIES[dataset])
    return paths


def find_data(dataset: str, data: str | Path | None) -> Path:
    """The directory holding `dataset`'s files, searched in the order of `candidates`; DataError if none does.

    A directory the user names (`data`) is the only one searched: another copy is never used instead.
    """
    check_name(dataset)
    if data is not None and not Path(data).expanduser().is_dir():
        what = "is not a directory" if Path(data).expanduser().exists() else "does not exist"
        raise DataError(f"no {dataset} data found in {data}: {data} {what}")
    tried = candidates(dataset, data)
    for root in tried:
        found = holding_dir(dataset, root)
        if found is not None:
            return found
    names = [str(path) for path in tried]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    source = SOURCES[dataset] if len(names) > 1 else SOURCES[dataset].replace("one of them", "it")
    hint = "" if data is not None else " (or pass --data DIR)"
    raise DataError(f"no {dataset} data found in {listed}: {dataset} is read from {expected_files(dataset)}; "
                    f"{source}{hint}")


def expected_files(dataset: str) -> str:
    """Which files hold `dataset`, and the sub-folders they may be in."""
    folders = [f"{sub}/" for sub in SUBDIRS[dataset] if sub]
    where = f" (directly or in {' or '.join(folders)})" if folders else ""
    return FILES[dataset] + where
