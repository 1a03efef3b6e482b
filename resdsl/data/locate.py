"""Where a dataset's files live: `find_data` and the `DataError` every data problem raises (no torch).

What each dataset's files are is in its record (resdsl.data.datasets).
"""

from __future__ import annotations

import os
from pathlib import Path

from resdsl.data.datasets import DATASETS, SYSTEM_COPIES
from resdsl.data.record import DatasetRecord

# Choices the CLI checks before it imports torch: image decoders and testing protocols.
DECODERS = ("auto", "torchvision", "pil", "nvjpeg")
PROTOCOLS = ("center", "10crop", "multiscale")


class DataError(Exception):
    """Missing or malformed data; `str(error)` is one plain sentence naming the paths and what to do."""


def record_of(dataset: str) -> DatasetRecord:
    """The registered record of `dataset`; DataError if there is none."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def holding_dir(dataset: str, root: Path) -> Path | None:
    """The directory at or under `root` holding `dataset`'s files, or None."""
    record = DATASETS[dataset]
    for sub in record.subdirs:
        candidate = root / sub if sub else root
        if any((candidate / marker).exists() for marker in record.markers):
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
    record = record_of(dataset)
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
    source = record.how_to_get() if len(names) > 1 else record.how_to_get().replace("one of them", "it")
    hint = "" if data is not None else " (or pass --data DIR)"
    raise DataError(f"no {dataset} data found in {listed}: {dataset} is read from {expected_files(dataset)}; "
                    f"{source}{hint}")


def expected_files(dataset: str) -> str:
    """Which files hold `dataset`, and the sub-folders they may be in."""
    record = DATASETS[dataset]
    folders = [f"{sub}/" for sub in record.subdirs if sub]
    where = f" (directly or in {' or '.join(folders)})" if folders else ""
    return record.files + where
