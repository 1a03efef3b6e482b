"""Files written whole or not at all: a temp file beside the target, renamed into place when complete."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only if the block completes; mode 0666 less the umask, like open().

    The temp file is `.NAME.XXXXXXXX.tmp` beside `path` and is removed on any error (a full disk
    included). `durable` also fsyncs the file and its folder, so a crash leaves the old or the new file.
    """
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes files private
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temp, path)
        if durable:
            _fsync_folder(path.parent)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


def writable_folder(folder: Path) -> None:
    """Raise OSError unless files can be made in `folder`, or in the nearest folder above it that exists."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
    with tempfile.TemporaryFile(dir=existing):
        pass


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Delete the temp files that a killed `atomic_write(folder / name)` left behind; returns them."""
    stale = sorted(folder.glob(f".{name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
