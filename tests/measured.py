"""Running a command as a child whose own CPU time and peak RSS are measured (shared by tests that bound them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Runs argv[2:] and writes its wait status, CPU seconds and peak RSS to argv[1]. The command is started from
# this small process because a child's peak RSS counts the memory of the process it was forked from (pytest's).
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024], out)
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Finished:
    """A finished command: exit status, output, wall time, CPU time and peak resident memory of the process (None
    for a command forked from tests/zygote.py, whose resident pages start as the zygote's)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int | None


def run_measured(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> Finished:
    """Run `command` to its end, measuring its own CPU time and peak RSS, not those of pytest or other children."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as folder:
        usage = Path(folder) / "usage.json"
        start = time.monotonic()
        process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(usage), *command], cwd=cwd, env=environment,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the command it started
            process.communicate()
            raise
        seconds = time.monotonic() - start
        status, cpu_seconds, rss = json.loads(usage.read_text())
    return Finished(os.waitstatus_to_exitcode(status), stdout.decode(errors="replace"),
                    stderr.decode(errors="replace"), seconds, cpu_seconds, rss)
