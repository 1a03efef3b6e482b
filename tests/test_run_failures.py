"""`train` and `plot` on hostile input: one sentence, the right exit status, no traceback, nothing half-written.

Each case runs the CLI as a process in a fresh folder holding `tiny.res`, a copy of a finished
run (`run/`, 12 iterations) and the idx data; wall time and peak memory are checked where the
case is about them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from resdsl.train.checkpoint import load

pytestmark = [pytest.mark.torch, pytest.mark.xdist_group("run_failures")]  # its runs, trained once

QUICK = ["--data", "data", "--checkpoint-every", "4", "--log-every", "2", "--eval-every", "100", "--device", "cpu"]
# generous bounds for the cases about time or memory: CPU seconds (wall time on a busy CI machine is
# several times longer), wall seconds (a hang), peak resident bytes
CPU_SECONDS, SECONDS, RSS_BYTES = 10, 60, 2 * 2**30

# A disk that is full while `full` is not empty: every write to a file opened then fails with ENOSPC after
# ROOM bytes, as a real disk would part-way through a file. The scripts below say when it fills up.
_FULL_DISK = """
import errno, sys
from resdsl import files
from resdsl.train import checkpoint
from resdsl.cli.app import main
full, ROOM = [], 1000
fdopen, save = files.os.fdopen, checkpoint.save
class FullDisk:
    def __init__(self, file): self.file, self.room = file, ROOM
    def write(self, data):
        if len(data) > self.room: raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)
    def __getattr__(self, name): return getattr(self.file, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.file.close()
def open_on_full_disk(handle, mode="r", *args, **kwargs):
    file = fdopen(handle, mode, *args, **kwargs)
    return FullDisk(file) if full else file
files.os.fdopen = open_on_full_disk
sys.argv[0] = "resdsl"
"""

# `resdsl ...` on a disk that fills up right after the first last.pt is written.
DISK_FULL_AFTER_FIRST_CHECKPOINT = _FULL_DISK + """
def save_then_fill(path, state):
    save(path, state)
    full.append(path)
checkpoint.save = save_then_fill
main()
"""

# `resdsl ...` on a disk that fills up just before the first last.pt is written.
DISK_FULL_AT_FIRST_CHECKPOINT = _FULL_DISK + """
def fill_then_save(path, state):
    full.append(path)
    save(path, state)
checkpoint.save = fill_then_save
main()
"""

# `resdsl ...` on a disk that is full from the start (an empty file can still be made).
DISK_FULL_FROM_THE_START = _FULL_DISK + """
full.append("start")
ROOM = 0
main()
"""

# `resdsl ...` where torch.compile fails as Inductor does when it cannot write its cache folder.
COMPILE_FAILS = """
import sys
import torch._inductor.compile_fx
from resdsl.cli.app import main
def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied", "/tmp/torchinductor_root")
torch._inductor.compile_fx.compile_fx = refuse
sys.argv[0] = "resdsl"
main()
"""

# `resdsl ...` where the tensorboard package cannot be imported, as in an install without the extra.
WITHOUT_TENSORBOARD = """
import sys
class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorboard":
            raise ModuleNotFoundError(f"No module named '{name}'")
sys.meta_path.insert(0, Hidden())
from resdsl.cli.app import main
sys.argv[0] = "resdsl"
main()
"""


@dataclass(frozen=True)
class Case:
    """A command (`{ro}` stands for a read-only folder), what it must answer, and checks of what it left."""

    name: str
    args: tuple[str, ...]
    status: int
    message: str  # a regular expression searched in stderr
    prepare: Callable[[Path], None] | None = None
    after: Callable[[Path], None] | None = None
    script: str | None = None
    bounded: bool = False  # check CPU_SECONDS, SECONDS and RSS_BYTES


def _tear_metrics(folder: Path) -> None:
    with (folder / "run" / "metrics.jsonl").open("a") as file:
        file.write('{"kind": "train", "iteration": 13, "lr": 0.0')  # killed mid-line


def _binary_metrics_tail(folder: Path) -> None:
    with (folder / "run" / "metrics.jsonl").open("ab") as file:
        file.write(bytes(range(128, 256)) * 8)  # not UTF-8, no newline


def _metrics_continue_to(iteration: int) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        records = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        steps = [r["iteration"] for r in records if r["kind"] == "train"]
        assert steps == list(range(2, iteration + 1, 2))
    return check


def _stale_temp(folder: Path) -> None:
    (folder / "run" / ".last.pt.k1ll3d__.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")


def _no_temp_left(folder: Path) -> None:
    assert not list((folder / "run").glob(".*.tmp"))


def _kept_checkpoint_of_iteration_4(folder: Path) -> None:
    assert load(folder / "disk" / "last.pt")["iteration"] == 4
    assert not list((folder / "disk").glob(".*.tmp"))


def _nothing_left(name: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert not (folder / name).exists()
    return check


def _kept(name: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert (folder / name).is_file()
    return check


def _users_folder(folder: Path) -> None:
    (folder / "mine").mkdir()
    (folder / "mine" / "notes.txt").write_text("the user's own file")


def _only_the_users_file_left(folder: Path) -> None:
    # the run made mine/disk/run: all three are gone, and the file that was there is as it was
    assert [path.name for path in (folder / "mine").iterdir()] == ["notes.txt"]
    assert (folder / "mine" / "notes.txt").read_text() == "the user's own file"


def _tear_config_lose_mean(folder: Path) -> None:
    (folder / "run" / "config.json").write_text('{"recipe": {"lr": 0.0')  # cut off mid-write
    (folder / "run" / "mean.pt").rename(folder / "mean_as_trained.pt")


def _pipes_for_config_and_mean(folder: Path) -> None:
    (folder / "run" / "mean.pt").rename(folder / "mean_as_trained.pt")
    for name in ("config.json", "mean.pt"):
        (folder / "run" / name).unlink(missing_ok=True)
        os.mkfifo(folder / "run" / name)  # reading either would wait for a writer forever


def _config_and_mean_restored(folder: Path) -> None:
    import torch

    config = json.loads((folder / "run" / "config.json").read_text())
    assert config["recipe"]["lr"] == 0.05 and config["dataset"] == "mnist" and config["mean"] == "mean.pt"
    assert config["input"] == [1, 12, 12] and config["classes"] == 10
    assert torch.equal(torch.load(folder / "run" / "mean.pt", weights_only=True),
                       torch.load(folder / "mean_as_trained.pt", weights_only=True))


def _metrics_file(content: bytes) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        (folder / "bad").mkdir()
        (folder / "bad" / "metrics.jsonl").write_bytes(content)
    return prepare


def _huge_metrics_line(folder: Path) -> None:
    (folder / "bad").mkdir()
    with (folder / "bad" / "metrics.jsonl").open("wb") as file:
        file.truncate(2**30)  # a sparse GiB of zero bytes without a newline


def _nothing_written(name: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert not (folder / name).exists() and not list(folder.glob(f".{Path(name).name}.*"))
    return check


CASES = [
    Case("train --out onto a file", ("train", "tiny.res", "--out", "tiny.res", *QUICK), 1,
         r"^error: --out tiny.res is a file, not a directory\n$"),
    Case("train --out below a file", ("train", "tiny.res", "--out", "tiny.res/run", *QUICK), 1,
         r"^error: cannot write to the run directory tiny.res/run: tiny.res is a file, not a folder\n$"),
    Case("train --out into a read-only folder", ("train", "tiny.res", "--out", "{ro}/run", *QUICK), 1,
         r"^error: cannot write to the run directory .*/run: (Read-only file system|Permission denied)\n$"),
    Case("train on a disk that fills up", ("train", "tiny.res", "--out", "disk", *QUICK), 1,
         r"error: cannot write disk/last.pt at iteration 8: No space left on device; the previous last.pt is "
         r"kept, and the run can continue with --resume once that is fixed\n$",
         script=DISK_FULL_AFTER_FIRST_CHECKPOINT, after=_kept_checkpoint_of_iteration_4),
    Case("train on a disk full at the first checkpoint", ("train", "tiny.res", "--out", "disk/run", *QUICK), 1,
         r"^error: cannot write disk/run/last.pt at iteration 4: No space left on device; no last.pt was written, so "
         r"start the run again once that is fixed\n$",
         script=DISK_FULL_AT_FIRST_CHECKPOINT, after=_kept("disk/run/metrics.jsonl")),  # steps ran: kept
    Case("train on a disk full from the start", ("train", "tiny.res", "--out", "mine/disk/run", *QUICK), 1,
         r"^error: cannot write mine/disk/run/spec.res: No space left on device\n$",
         prepare=_users_folder, script=DISK_FULL_FROM_THE_START, after=_only_the_users_file_left),
    Case("train --compile where torch.compile fails", ("train", "tiny.res", "--out", "new", "--compile", *QUICK), 1,
         r"^error: torch.compile failed: PermissionError: Permission denied: /tmp/torchinductor_root; run without "
         r"--compile\n$", script=COMPILE_FAILS, after=_nothing_left("new")),
    Case("train --resume with a torn config.json and no mean.pt", ("train", "tiny.res", "--out", "run", "--resume",
                                                                  "--iterations", "14", *QUICK), 0,
         r"^warning: run/config.json was unreadable; wrote it again from this run's settings\n"
         r"warning: run/mean.pt was missing; wrote it again from run/last.pt's mean image\n$",
         prepare=_tear_config_lose_mean, after=_config_and_mean_restored),
    Case("train --resume with pipes for config.json and mean.pt", ("train", "tiny.res", "--out", "run", "--resume",
                                                                   "--iterations", "14", *QUICK), 0,
         r"^warning: run/config.json was unreadable; wrote it again from this run's settings\n"
         r"warning: run/mean.pt was unreadable; wrote it again from run/last.pt's mean image\n$",
         prepare=_pipes_for_config_and_mean, after=_config_and_mean_restored),
    Case("train --resume after a torn metrics line", ("train", "tiny.res", "--out", "run", "--resume",
                                                     "--iterations", "14", *QUICK), 0,
         r"^warning: run/metrics.jsonl:\d+: dropped a line that is not a metrics record \(not JSON\)\n$",
         prepare=_tear_metrics, after=_metrics_continue_to(14)),
    Case("train --resume after binary metrics", ("train", "tiny.res", "--out", "run", "--resume",
                                                "--iterations", "14", *QUICK), 0,
         r"^warning: run/metrics.jsonl:\d+: dropped a line that is not a metrics record \(not text \(binary data\)\)",
         prepare=_binary_metrics_tail, after=_metrics_continue_to(14)),
    Case("train --resume after a killed checkpoint write", ("train", "tiny.res", "--out", "run", "--resume",
                                                           "--iterations", "14", *QUICK), 0,
         r"^warning: removed run/\.last\.pt\.k1ll3d__\.tmp, left by a checkpoint write that was killed half-way\n$",
         prepare=_stale_temp, after=_no_temp_left),
    Case("train --resume with another recipe", ("train", "tiny.res", "--out", "run", "--resume", "--lr", "0.1",
                                                "--seed", "4", *QUICK), 1,
         r"^error: cannot resume: run/last.pt was trained with lr 0.05 \(now 0.1\), --seed 0 \(now 4\); give the "
         r"same spec and flags as the first run \(only --iterations or --epochs may change\)\n$"),
    Case("train --resume shorter than done", ("train", "tiny.res", "--out", "run", "--resume", "--iterations", "10",
                                             *QUICK), 1,
         r"^error: cannot resume: run/last.pt is at iteration 12, past the 10 iterations now asked for\n$"),
    Case("train --resume longer with a cosine schedule", ("train", "tiny.res", "--out", "run", "--resume",
                                                         "--iterations", "20", "--recipe", "schedule cosine()", *QUICK),
         1, r"^error: cannot resume: run/last.pt was trained with schedule steps\(6: 0.1\) \(now cosine\(\)\)"),
    Case("train --weights and --resume", ("train", "tiny.res", "--out", "run", "--resume", "--weights",
                                         "run/last.pt", *QUICK), 2,
         r"^error: --weights starts a new run from weights and --resume continues a run from its last.pt; give one\n$"),
    Case("train --weights of a directory", ("train", "tiny.res", "--out", "new", "--weights", "run", *QUICK), 1,
         r"^error: run is a directory, not a weights file \(did you mean run/last.pt\?\)\n$",
         after=_nothing_written("new")),
    Case("train --tensorboard without tensorboard", ("train", "tiny.res", "--out", "new", "--tensorboard", *QUICK),
         1, r"^error: --tensorboard needs the tensorboard package: pip install 'resdsl\[tensorboard\]'\n$",
         script=WITHOUT_TENSORBOARD, after=_nothing_written("new")),
    Case("plot -o of an unknown type", ("plot", "run", "-o", "curves.bmp"), 2,
         r"^error: -o curves.bmp: cannot write .bmp figures; use one of .png, .pdf, .svg, .svgz, .eps, .ps, .jpg, "
         r".jpeg, .tif, .tiff, .webp\n$", after=_nothing_written("curves.bmp")),
    Case("plot -o onto a folder", ("plot", "run", "-o", "run"), 1,
         r"^error: -o run is a directory; give a file name, e.g. run/curves.png\n$"),
    Case("plot -o into a read-only folder", ("plot", "run", "-o", "{ro}/curves.png"), 1,
         r"^error: cannot write .*/curves.png: (Read-only file system|Permission denied)\n$"),
    Case("plot of binary metrics", ("plot", "bad", "-o", "curves.png"), 1,
         r"^error: bad/metrics.jsonl:1: not a metrics record: not text \(binary data\)\n$",
         prepare=_metrics_file((bytes(range(128, 256)) + b"\n") * 8192), after=_nothing_written("curves.png"),
         bounded=True),
    Case("plot of a GiB-long metrics line", ("plot", "bad", "-o", "curves.png"), 1,
         r"^error: bad/metrics.jsonl:1: not a metrics record: a line longer than 64 KiB\n$",
         prepare=_huge_metrics_line, after=_nothing_written("curves.png"), bounded=True),
    Case("plot of an iteration past any integer type", ("plot", "bad", "-o", "curves.png"), 1,
         r"^error: bad/metrics.jsonl:2: not a metrics record: no 'iteration' \(a whole number of steps\)\n$",
         prepare=_metrics_file(b'{"iteration": 1, "train_error": 0.5}\n{"iteration": 1e400, "train_error": 0.5}\n')),
    Case("plot of an error that overflows", ("plot", "bad", "-o", "curves.png"), 1,
         r"^error: bad/metrics.jsonl:1: not a metrics record: 'train_error' is not a finite number\n$",
         prepare=_metrics_file(b'{"iteration": 1, "train_error": 1e999}\n')),
    Case("plot of a 5000-digit number", ("plot", "bad", "-o", "curves.png"), 1,
         r"^error: bad/metrics.jsonl:1: not a metrics record: a number too long to read\n$",
         prepare=_metrics_file(b'{"iteration": 1' + b"0" * 5000 + b', "train_error": 0.5}\n'), bounded=True),
    Case("plot of a run still writing its last line", ("plot", "bad", "-o", "curves.png"), 0,
         r"^note: bad's training error is a single point \(iteration 2\): the run recorded it once; train with a "
         r"--log-every below its length for a curve\n$",
         prepare=_metrics_file(b'{"kind": "train", "iteration": 2, "train_error": 0.5}\n{"kind": "tra')),
]


@pytest.fixture(scope="module")
def template(tiny_workspace: Path, resdsl_cli) -> Path:
    """tiny.res, its data, and `run/`: 12 iterations of it, finished."""
    result = resdsl_cli("train", "tiny.res", "--out", "failures_run", *QUICK, cwd=tiny_workspace)
    assert result.returncode == 0, result.stderr
    return tiny_workspace


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_gets_one_sentence(case: Case, template: Path, tmp_path: Path, resdsl_cli, request):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(template / "tiny.res", folder)
    os.symlink(template / "data", folder / "data")
    shutil.copytree(template / "failures_run", folder / "run")
    if case.prepare is not None:
        case.prepare(folder)
    read_only = request.getfixturevalue("read_only_dir") if any("{ro}" in arg for arg in case.args) else None
    args = [arg.replace("{ro}", str(read_only)) for arg in case.args]
    # a bounded case's CPU seconds count the start-up, and its peak RSS is its own only in a fresh process
    result = resdsl_cli(*args, cwd=folder, script=case.script, timeout=120, fresh=case.bounded)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == case.status, result.stderr
    assert re.search(case.message, result.stderr), result.stderr
    if case.after is not None:
        case.after(folder)
    if case.bounded:
        assert result.cpu_seconds < CPU_SECONDS and result.seconds < SECONDS and result.max_rss_bytes < RSS_BYTES, \
            (result.cpu_seconds, result.seconds, result.max_rss_bytes)
