"""Files written whole or not at all: a temp file beside the target, renamed into place when complete."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_write(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only if the block completes; mode 0666 less the umask, like open().

    The temp file is `.NAME.XXXXXXXX.tmp` beside `path` and is removed on any error (a full disk
    included); an OSError that names the temp file or no file names `path` instead, which the user gave.
    `durable` also fsyncs the file and its folder, so a crash leaves the old or the new file.
    """
    temp = None
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes files private
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temp, path)
        if durable:
            _fsync_folder(path.parent)
    except OSError as error:
        if error.filename is None or _is_temp_of(Path(str(error.filename)), path):
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error  # same errno, same class
        raise
    finally:
        if temp is not None and os.path.lexists(temp):
            os.unlink(temp)


def writable_folder(folder: Path) -> None:
    """Raise OSError unless files can be made in `folder`, or in the nearest folder above it that exists."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file, not a folder")
    with tempfile.TemporaryFile(dir=existing):
        pass


def folders_to_make(folder: Path) -> list[Path]:
    """The folders that `folder.mkdir(parents=True)` would create, the deepest first."""
    folder = Path(os.path.abspath(folder))
    return [path for path in (folder, *folder.parents) if not path.exists()]


def reason(error: OSError) -> str:
    """The system's reason for `error` without the path it names: `No space left on device`."""
    return error.strerror or str(error)


def output_problem(path: Path, flag: str) -> str | None:
    """Why a file may not be written at `path` (`flag` names it): a folder, a pipe, a device; None if it may."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{flag} {path}: {error.strerror}"
    return None if stat.S_ISREG(mode) else f"{flag} {path} is {kind(mode)}; give the name of a file to write"


def overwritten_input(output: Path, flag: str, inputs: dict[str, str | Path | None]) -> str | None:
    """Why writing `output` would destroy one of the `inputs` (named by what they are: "the spec"), or None."""
    for what, path in inputs.items():
        try:
            same = path is not None and os.path.samefile(output, path)
        except (OSError, ValueError):  # either is missing (or not a path at all, e.g. spec text)
            same = False
        if same:
            return f"{flag} {output} is {what} this command reads; give another file to write"
    return None


def kind(mode: int) -> str:
    """What a file of this `st_mode` is, for a message: `a named pipe`."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Delete the temp files that a killed `atomic_write(folder / name)` left behind; returns them."""
    stale = sorted(folder.glob(f".{name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _is_temp_of(candidate: Path, path: Path) -> bool:
    """Whether `candidate` is one of atomic_write(path)'s temp files."""
    return candidate.parent == path.parent and candidate.name.startswith(f".{path.name}.") and candidate.name.endswith(
        ".tmp")


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
