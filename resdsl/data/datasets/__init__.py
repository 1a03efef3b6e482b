"""The registry of datasets: one `DatasetRecord` per module here, registered by name (no torch).

Adding a dataset is one module here defining its `RECORD` plus its line in the registration below.
"""

from __future__ import annotations

from pathlib import Path

from resdsl.data.datasets import cifar10, cifar100, fashion_mnist, imagefolder, imagenet, mnist
from resdsl.data.record import DatasetRecord

DATASETS: dict[str, DatasetRecord] = {}
#: Where a Debian package puts a dataset (kept apart so that tests can point it elsewhere).
SYSTEM_COPIES: dict[str, Path] = {}


def register(record: DatasetRecord) -> DatasetRecord:
    """Make `record` known to `resdsl train`, `eval` and the recipe's `dataset` setting."""
    if record.name in DATASETS:
        raise ValueError(f"a dataset named '{record.name}' is already registered")
    DATASETS[record.name] = record
    if record.system_copy is not None:
        SYSTEM_COPIES[record.name] = record.system_copy
    return record


def unregister(name: str) -> None:
    """Forget the dataset `name` (for tests that register their own)."""
    del DATASETS[name]
    SYSTEM_COPIES.pop(name, None)


for _module in (cifar10, cifar100, fashion_mnist, mnist, imagenet, imagefolder):
    register(_module.RECORD)
