"""The registry of datasets: one `DatasetRecord` per module here, registered by name (no torch).

Adding a dataset is one module here defining its `RECORD`: every module of this package is registered.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

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


def records_in(package: ModuleType) -> list[DatasetRecord]:
    """The `RECORD` of every module of `package`, those of fixed-size images first, each group by name."""
    modules = [importlib.import_module(f"{package.__name__}.{module.name}")
               for module in pkgutil.iter_modules(package.__path__)]
    return sorted((module.RECORD for module in modules), key=lambda record: (record.image_shape is None, record.name))


for _record in records_in(sys.modules[__name__]):
    register(_record)
