"""One process per run folder: an exclusive flock on `OUT/.lock`, which the kernel releases when its holder dies."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_NAME = ".lock"


class Locked(Exception):
    """Another live process holds the run folder; the message names its pid and host."""


class RunLock:
    """An exclusive lock on a run folder, held until `release` (or the process's end)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        # O_NOFOLLOW and O_NONBLOCK: a symlink or pipe planted as the lock file is never followed or waited on
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise Locked(f"{out} is in use by {holder}: one run folder takes one train process at a time; "
                             "wait for it to finish or choose another --out") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
