"""`resdsl build` on hostile and careless input, each case a whole process (a native abort shows only there):
exit status, one `error:` sentence, no traceback, bounded time and memory, and nothing written or left behind.

Full-disk and read-only cases run in a user namespace (`unshare -rm`) on a small tmpfs mounted over the work folder,
holding a previous artifact `out` that must survive.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from measured import LAUNCHER
from typer.testing import CliRunner

from resdsl.backends.staging import remove_abandoned
from resdsl.cli.app import app

pytestmark = pytest.mark.torch

CIFAR20 = str(Path(__file__).resolve().parent.parent / "specs" / "cifar20.res")
HUGE = "1" * 5000  # past Python's 4300-digit int() limit
SANDBOX = """
mount -t tmpfs -o size=256k tmpfs "$0" && cd "$0" || exit 99
for artifact in {artifacts}; do printf "previous $artifact " > $artifact || exit 99; done
{after_mount}
"$@"; status=$?
printf '\\n@@after\\n'; ls -A; cat {artifacts}
exit $status
"""
FILESYSTEMS = {"full": "", "read-only": 'mount -o remount,ro "$0" || exit 99'}


class RunsCode:
    """Unpickling this makes the directory `target`: proof that a loader ran code from the file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def weights_dir(work: Path) -> None:
    (work / "w.pt").mkdir()


def weights_fifo(work: Path) -> None:
    os.mkfifo(work / "w.pt")


def weights_random_bytes(work: Path) -> None:
    data = bytes(range(7, 256)) * 16  # neither a zip archive (PK) nor a pickle (\x80)
    (work / "w.pt").write_bytes(data)


def weights_running_code(work: Path) -> None:
    torch.save({"model": RunsCode("code-ran")}, work / "w.pt")  # relative to the build's working folder


def weights_plain_pickle(work: Path) -> None:
    (work / "w.pt").write_bytes(pickle.dumps(RunsCode(str(work / "code-ran"))))


def weights_whole_module(work: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), work / "w.pt")


def weights_truncated(work: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3)}, work / "w.pt")
    data = (work / "w.pt").read_bytes()
    (work / "w.pt").write_bytes(data[: len(data) // 2])


def output_dir(work: Path) -> None:
    (work / "out.onnx").mkdir()


@dataclass(frozen=True)
class Case:
    """One `resdsl build` run: its arguments after the spec, and what must come of it."""

    name: str
    args: tuple[str, ...]
    status: int
    message: str
    setup: Callable[[Path], None] | None = None
    filesystem: str | None = None  # "full" or "read-only": run on a 256 KiB tmpfs holding `artifacts`
    artifacts: tuple[str, ...] = ("out",)  # the previous artifact's files, which must survive
    seconds: float = 120  # generous: a 2-core machine shared with other jobs
    rss_mib: int = 3072


ONNX = ("--backend", "onnx", "-o", "out.onnx")
CASES = [
    Case("missing weights", (*ONNX, "--weights", "w.pt"), 1, "w.pt: no such weights file"),
    Case("weights a directory", (*ONNX, "--weights", "w.pt"), 1, "is a directory, not a weights file", weights_dir),
    Case("weights a fifo", (*ONNX, "--weights", "w.pt"), 1, "is not a regular file", weights_fifo, seconds=30),
    Case("weights random bytes", (*ONNX, "--weights", "w.pt"), 1,
         "is not a PyTorch weights file (neither a torch.save archive nor a pickle)", weights_random_bytes),
    Case("weights run code", (*ONNX, "--weights", "w.pt"), 1,
         f"holds the Python object {os.mkdir.__module__}.mkdir, which resdsl does not unpickle (nothing in the "
         "file was run); resdsl loads tensors only", weights_running_code),
    Case("output a directory", ("--backend", "onnx", "-o", "out.onnx"), 1,
         "-o out.onnx is a directory; give the artifact's file name", output_dir),
    Case("output read-only", ("--backend", "export", "-o", "out"), 1,
         "cannot write out: Read-only file system; the existing out is unchanged", filesystem="read-only"),
    *(Case(f"disk full {backend}", ("--backend", backend, "-o", "out"), 1,
           "cannot write out: No space left on device; the existing out is unchanged", filesystem="full")
      for backend in ("export", "torchscript", "onnx")),  # pytorch is export's writer without folding
    Case("disk full openvino", ("--backend", "openvino", "-o", "out.xml"), 1,
         "cannot write out.xml: No space left on device; the existing out.xml is unchanged", filesystem="full",
         artifacts=("out.xml", "out.bin")),
    Case("input too large for memory", (*ONNX, "--input", "3x65536x65536"), 1,
         "--input 3x65536x65536: one image's activations come to", seconds=30, rss_mib=1024),
    Case("input too large for this machine", (*ONNX, "--input", "3x4096x4096", "--batch", "256"), 1,
         "at 3x4096x4096 (--input) and batch 256 (--batch) needs at least", seconds=30, rss_mib=1024),
    Case("batch too large for memory", (*ONNX, "--batch", "100000000"), 1,
         "and batch 100000000 (--batch) needs at least", seconds=30, rss_mib=1024),
    Case("dynamic batch too large for memory", (*ONNX, "--dynamic-batch", "1:1:99999999"), 1,
         "and batch 99999999 (--dynamic-batch) needs at least", seconds=30, rss_mib=1024),
    Case("input of 5000 digits", (*ONNX, "--input", f"3x{HUGE}x32"), 2, "--input takes CxHxW"),
    Case("dynamic batch of 5000 digits", (*ONNX, "--dynamic-batch", f"1:2:{HUGE}"), 2,
         "--dynamic-batch takes MIN:OPT:MAX"),
]


@dataclass
class Run:
    status: int
    output: str
    seconds: float
    rss_mib: float
    after: list[str] | None  # the sandbox's listing and the previous artifact's content, after the run


def sandbox_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def run_build(args: tuple[str, ...], work: Path, logs: Path, filesystem: str | None, seconds: float,
              artifacts: tuple[str, ...] = ("out",)) -> Run:
    """`resdsl build CIFAR20 ARGS` in `work` as a child process: its status, output, wall time and peak RSS."""
    command = [sys.executable, "-c", LAUNCHER, str(logs / "usage.json"), sys.executable, "-m", "resdsl", "build",
               CIFAR20, *args]
    if filesystem is not None:
        script = SANDBOX.format(after_mount=FILESYSTEMS[filesystem], artifacts=" ".join(artifacts))
        command = ["unshare", "-rm", "sh", "-c", script, str(work), *command]
    with (logs / "out").open("w+") as out:
        start = time.monotonic()
        process = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        elapsed = time.monotonic() - start
        out.seek(0)
        text = out.read()
    output, _, after = text.partition("\n@@after\n")
    usage = logs / "usage.json"
    rss = json.loads(usage.read_text())[2] / 2**20 if usage.exists() else float("inf")
    return Run(process.returncode, output, elapsed, rss, after.split("\n") if filesystem is not None else None)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_build_refuses_bad_input_in_one_sentence(case: Case, tmp_path: Path):
    if case.filesystem is not None and not sandbox_available():
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    logs.mkdir()
    if case.setup is not None:
        case.setup(work)
    before = sorted(p.name for p in work.iterdir())
    result = run_build(case.args, work, logs, case.filesystem, case.seconds, case.artifacts)
    assert result.seconds < case.seconds, f"still running after {case.seconds} s"
    assert result.status == case.status, result.output
    assert "Traceback" not in result.output and "terminate called" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert case.message in lines[0]
    assert "weights_only=False" not in lines[0] and "will likely succeed" not in lines[0]
    assert result.rss_mib < case.rss_mib, f"peak RSS {result.rss_mib:.0f} MiB"
    if case.filesystem is not None:
        previous = "".join(f"previous {artifact} " for artifact in case.artifacts)
        assert result.after == [*sorted(case.artifacts), previous], \
            "a staging folder was left, or the previous artifact changed"
    else:
        assert sorted(p.name for p in work.iterdir()) == before


@pytest.mark.parametrize(("setup", "message"), [
    (weights_plain_pickle, "is a plain Python pickle, not a file saved with torch.save"),
    (weights_whole_module, "holds the Python object torch.nn.modules.linear.Linear"),
    (weights_truncated, "is a torch.save archive that is truncated or damaged"),
])
def test_weights_that_torch_load_refuses_are_named_for_what_they_are_not(setup, message, tmp_path: Path):
    setup(tmp_path)
    result = CliRunner().invoke(app, ["build", CIFAR20, "--backend", "onnx", "-o", str(tmp_path / "out.onnx"),
                                      "--weights", str(tmp_path / "w.pt")])
    assert result.exit_code == 1 and message in result.output
    assert "weights_only=False" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_a_killed_build_leaves_a_staging_folder_that_the_next_build_removes(tmp_path: Path):
    out = tmp_path / "c20.pt2"
    command = [sys.executable, "-m", "resdsl", "build", CIFAR20, "--backend", "export", "-o", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".c20.pt2.*/.lock")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".c20.pt2.*")), "the build was not killed while staging"
    result = CliRunner().invoke(app, ["build", CIFAR20, "--backend", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c20.pt2", "c20.pt2.json"]


@pytest.mark.skipif(sys.platform == "win32", reason="staging folders are locked with fcntl")
def test_a_staging_folder_whose_build_is_running_is_kept(tmp_path: Path):
    import fcntl

    folder = tmp_path / ".c20.pt2.abcd1234"
    folder.mkdir()
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert remove_abandoned(tmp_path / "c20.pt2") == []
    assert remove_abandoned(tmp_path / "c20.pt2") == [folder] and not folder.exists()
