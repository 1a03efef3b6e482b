"""Fashion-MNIST: 70,000 28x28 greyscale images of clothing in 10 classes, idx files."""

from pathlib import Path

from resdsl.data.datasets.mnist import IDX_FILES, IDX_MARKERS, load
from resdsl.data.record import DatasetRecord

RECORD = DatasetRecord(
    name="fashion-mnist", files=IDX_FILES, markers=IDX_MARKERS, subdirs=("", "raw", "FashionMNIST/raw"),
    source="put the idx files from https://github.com/zalandoresearch/fashion-mnist into one of them",
    load=load, classes=10, image_shape=(1, 28, 28), package="dataset-fashion-mnist",
    system_copy=Path("/usr/share/datasets/fashion-mnist"), aliases=("fashion_mnist", "fashionmnist"))
