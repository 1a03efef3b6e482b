"""Build an artifact's files in a hidden folder beside the target, then move them into place, the main file last.

A build holds an advisory lock on its folder (`.OUT.XXXXXXXX/.lock`) while it runs, so the next build to the
same output can tell a folder left by a killed build (lock free) from one in use (lock held) and remove only
the former. Without fcntl (Windows) leftovers are not cleaned up.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from resdsl.backends import writing
from resdsl.files import folders_to_make

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".lock"
UNLOCKED_GRACE_S = 60  # a folder without a lock file may be one that another build is just creating


@contextmanager
def staging_folder(output: Path) -> Iterator[Path]:
    """A new, locked hidden folder beside `output` (created with its parents), removed on exit; the parents it
    created are removed too if the body fails, so a failed build leaves nothing.

    Folders left beside it by earlier builds that were killed are removed first. A folder that cannot be
    created (read-only, not a directory) is WriteFailed.
    """
    created = folders_to_make(output.parent)
    with writing():
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(output)
        folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with open(folder / LOCK, "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for parent in created:  # the deepest first; rmdir leaves a folder something else wrote into since
            with suppress(OSError):
                parent.rmdir()
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_into_place(folder: Path, output: Path, files: list[str]) -> None:
    """Rename `files` from `folder` beside `output`, the first (the main artifact) last."""
    with writing():
        for name in reversed(files):
            os.replace(folder / name, output.parent / name)


def remove_abandoned(output: Path) -> list[Path]:
    """Remove the staging folders of `output` whose build is gone (no lock held); returns them."""
    if fcntl is None:
        return []
    pattern = re.compile(re.escape(f".{output.name}.") + r"[a-z0-9_]{8}")  # tempfile.mkdtemp's names
    removed = []
    for entry in output.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink() and _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _abandoned(folder: Path) -> bool:
    assert fcntl is not None  # remove_abandoned looks for nothing without it
    try:
        with open(folder / LOCK, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False  # a build is writing into it right now
    except OSError:  # no lock file: left by an older resdsl, or being created this instant
        try:
            return time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_S
        except OSError:
            return False
