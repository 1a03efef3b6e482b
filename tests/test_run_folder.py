"""A run folder belongs to one process, keeps the work done, and training says when it diverges."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.torch

QUICK = ["--data", "data", "--checkpoint-every", "4", "--log-every", "2", "--eval-every", "100", "--device", "cpu"]
HOLD = """
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\\n".encode())
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def workspace(tiny_workspace: Path, tmp_path: Path) -> Path:
    """A copy of tiny_workspace's spec and data of this test's own."""
    shutil.copy(tiny_workspace / "tiny.res", tmp_path / "tiny.res")
    (tmp_path / "data").symlink_to(tiny_workspace / "data")
    return tmp_path


@pytest.fixture
def holder(workspace: Path):
    """A process holding the flock on run/.lock (a train process stand-in): `holder(folder)` returns it."""
    started = []

    def hold(folder: Path) -> subprocess.Popen:
        folder.mkdir(exist_ok=True)
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / ".lock")], stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout.readline() == "held\n"
        started.append(process)
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def trained(tiny_workspace: Path, tmp_path_factory: pytest.TempPathFactory, resdsl_cli):
    """tiny.res trained 12 iterations with QUICK into `run/` of a workspace of its own, once: the finished command.

    Tests read it, or copy the run folder into their own workspace before they change anything there."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copy(tiny_workspace / "tiny.res", root / "tiny.res")
    (root / "data").symlink_to(tiny_workspace / "data")
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, cwd=root)
    assert result.returncode == 0, result.stderr
    return SimpleNamespace(run=root / "run", result=result)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir()}


def test_second_train_on_one_out_exits_1_at_once_and_first_finishes(workspace: Path, zygote, resdsl_cli) -> None:
    first = zygote.start(["train", "tiny.res", "--out", "run", *QUICK, "--iterations", "12", "--log-every", "1"],
                         cwd=workspace)
    lock = workspace / "run" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().startswith(f"pid {first.pid} ")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    # the first run is held still while the second starts and is refused, however long that takes: a short run
    # cannot finish in between
    first.send_signal(signal.SIGSTOP)
    try:
        second = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, "--iterations", "12", cwd=workspace,
                            timeout=120)
        still_running = first.poll() is None
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1] == (
        f"error: run is in use by pid {first.pid} on {socket.gethostname()}: one run folder takes one train process "
        "at a time; wait for it to finish or choose another --out")
    assert still_running
    assert first.returncode == 0, err
    iterations = [json.loads(line)["iteration"] for line in (workspace / "run" / "metrics.jsonl").read_text()
                  .splitlines() if json.loads(line)["kind"] == "train"]
    assert iterations == list(range(1, 13))


def test_train_into_a_locked_folder_is_refused_within_2_seconds_and_writes_nothing(
        workspace: Path, holder, resdsl_cli) -> None:
    process = holder(workspace / "run")
    before = _listing(workspace / "run")
    # timed from main(): the interpreter's start and torch's import are not the lock's doing
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, cwd=workspace, timeout=120,
                        script="import resdsl.train, resdsl.cli.app; import time, sys; "
                               "t = time.monotonic(); sys.argv = ['resdsl', *sys.argv[1:]]\n"
                               "try:\n    resdsl.cli.app.main()\nfinally:\n"
                               "    print(f'took {time.monotonic() - t:.3f}', file=sys.stderr)")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: run is in use by pid {process.pid} on {socket.gethostname()}:")
    assert float(lines[-1].split()[1]) < 2.0, lines[-1]
    assert _listing(workspace / "run") == before


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_every_rank_of_a_distributed_train_into_a_locked_folder_exits_with_the_locks_sentence(
        workspace: Path, holder, zygote) -> None:
    # the two ranks torchrun would start, started by hand so that no launcher ends rank 1 when rank 0 fails:
    # rank 1 must learn of the failure from rank 0 rather than wait for it at a barrier
    process = holder(workspace / "run")
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = [zygote.start(["train", "tiny.res", "--out", "run", *QUICK], cwd=workspace,
                          env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in (0, 1)]
    try:
        finished = [rank.communicate(timeout=120) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
    sentence = (f"error: run is in use by pid {process.pid} on {socket.gethostname()}: one run folder takes one train "
                "process at a time; wait for it to finish or choose another --out\n")
    assert [rank.returncode for rank in ranks] == [1, 1]
    assert [err for _, err in finished] == [sentence, sentence]


def test_resume_into_a_locked_folder_is_refused(workspace: Path, trained, holder, resdsl_cli) -> None:
    shutil.copytree(trained.run, workspace / "run")
    process = holder(workspace / "run")
    before = _listing(workspace / "run")
    result = resdsl_cli("train", "tiny.res", "--out", "run", "--resume", "--iterations", "16", *QUICK, cwd=workspace)
    assert result.returncode == 1
    assert re.match(rf"^error: run is in use by pid {process.pid} on .*; wait for it to finish or choose another "
                    r"--out\n$", result.stderr)
    assert _listing(workspace / "run") == before


def test_stale_lock_of_a_dead_process_does_not_block(workspace: Path, resdsl_cli) -> None:
    (workspace / "run").mkdir()
    (workspace / "run" / ".lock").write_text("pid 999999 on elsewhere\n")  # no process holds its flock
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "run" / ".lock").read_text().startswith("pid ")
    assert (workspace / "run" / "last.pt").exists()


def test_lock_is_released_when_its_holder_is_killed(workspace: Path, holder) -> None:
    process = holder(workspace / "run")
    process.kill()
    process.wait()
    fd = os.open(workspace / "run" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if the kernel kept it
    finally:
        os.close(fd)


def test_failed_evaluation_keeps_the_trained_run_and_says_how_to_evaluate(
        tmp_path: Path, make_image_folder, resdsl_cli) -> None:
    images = make_image_folder({"train": 4, "val": 1})
    (images / "val" / "n00000003" / "0.JPEG").write_bytes(b"not a jpeg")
    (tmp_path / "tiny.res").write_text("""network tiny {
  input 3x32x32
  stem { conv1: conv 3x3, 8; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) { layer1: 1 x 8 }
  head { avgpool; fc: linear 10 }
}
""")
    result = resdsl_cli("train", "tiny.res", "--dataset", "imagefolder", "--data", str(images), "--out", "run",
                        "--augment", "scale range(36, 40), crop 32, flip", "--batch", "8", "--iterations", "4",
                        "--eval-every", "2", "--log-every", "1", "--workers", "0", "--device", "cpu", "--split", "0",
                        cwd=tmp_path)
    assert result.returncode == 1
    assert re.match(r"^error: the evaluation at iteration 2 failed: .*0\.JPEG.*; the run is kept, with run/last.pt at "
                    r"that iteration: once that is fixed, evaluate it with `resdsl eval run` or continue it with "
                    r"--resume\n$", result.stderr), result.stderr
    import torch

    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["iteration"] == 2
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"kind": "train"') == 2  # iterations 1, 2


def test_new_run_into_a_folder_with_an_earlier_runs_metrics_but_no_last_pt_is_refused(
        workspace: Path, resdsl_cli) -> None:
    # what a run stopped before its first checkpoint leaves: its metrics, config and spec, no last.pt
    run = workspace / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "iteration": 1, "train_loss": 2.3}\n')
    (run / "config.json").write_text("{}\n")
    (run / "spec.res").write_text("network tiny {}\n")
    before = _listing(run)
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, cwd=workspace)
    assert result.returncode == 1
    assert result.stderr == ("error: run holds an earlier run's metrics.jsonl, config.json, spec.res but no last.pt to "
                             "--resume from; choose another --out, so that they are kept\n")
    assert _listing(run) == before


def test_run_failing_before_its_first_step_leaves_nothing(workspace: Path, resdsl_cli) -> None:
    result = resdsl_cli("train", "tiny.res", "--out", "new/run", *QUICK, "--data", "nowhere", cwd=workspace)
    assert result.returncode == 1
    assert not (workspace / "new").exists()


def test_divergence_at_an_absurd_lr_stops_with_a_hint(workspace: Path, resdsl_cli) -> None:
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, "--lr", "1e6", cwd=workspace)
    assert result.returncode == 1
    assert re.match(r"^error: training diverged: the loss (became (nan|inf)|rose from .*) .*\(lr 1e\+06\); try a "
                    r"lower --lr or a --warmup, or pass --no-divergence-check to keep going\n$", result.stderr)


def test_no_divergence_check_keeps_going(workspace: Path, resdsl_cli) -> None:
    result = resdsl_cli("train", "tiny.res", "--out", "run", *QUICK, "--lr", "1e6", "--no-divergence-check",
                        cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "run" / "last.pt").exists()


def _run_at(iteration: int, first_loss: float | None, warmup=None, warming: bool = False, check: bool = True):
    from resdsl.train.loop import State

    return SimpleNamespace(state=State(iteration=iteration, first_loss=first_loss, warming=warming),
                           recipe=SimpleNamespace(warmup=warmup), config=SimpleNamespace(divergence_check=check))


def test_loss_rising_from_18_9_to_31_7_is_divergence() -> None:
    from resdsl.train.loop import RunError, _Run

    # the case: a new net's loss rose from 18.9 to 31.7 at lr 0.1
    with pytest.raises(RunError, match=r"^training diverged: the loss rose from 18.9 to 31.7 by iteration 400 "
                                       r"\(lr 0.1\); try a lower --lr or a --warmup"):
        _Run._check_divergence(_run_at(400, 18.9), 31.7, 0.1)


def test_loss_rising_during_the_warm_up_is_not_divergence() -> None:
    from resdsl.recipe import Warmup
    from resdsl.train.loop import _Run

    _Run._check_divergence(_run_at(300, 2.3, warmup=Warmup(iterations=400)), 9.0, 0.1)
    _Run._check_divergence(_run_at(300, 2.3, warming=True), 9.0, 0.1)
    _Run._check_divergence(_run_at(300, 2.3, check=False), 9.0, 0.1)


def test_a_spike_in_the_first_steps_is_not_divergence() -> None:
    from resdsl.train.loop import _Run

    _Run._check_divergence(_run_at(2, 2.5), 13.9, 0.1)  # ResNet-18 on a JPEG folder, iteration 2: x5.6


def test_a_falling_loss_is_not_divergence() -> None:
    from resdsl.train.loop import _Run

    _Run._check_divergence(_run_at(400, 2.3), 0.4, 0.1)


def test_log_lines_show_elapsed_and_eta(trained) -> None:
    logs = [line for line in trained.result.stdout.splitlines() if " img/s" in line]
    assert len(logs) == 6  # 12 iterations, a line every 2
    assert all(re.search(r"img/s  elapsed \d+:\d\d  ETA \d+:\d\d$", line) for line in logs), logs
    assert logs[-1].endswith("ETA 0:00")


@pytest.mark.parametrize(("seconds", "reading"), [(0, "0:00"), (7.4, "0:07"), (725, "12:05"), (10929, "3:02:09")])
def test_clock_reads_hours_minutes_seconds(seconds: float, reading: str) -> None:
    from resdsl.train.progress import clock

    assert clock(seconds) == reading


def test_spec_without_train_section_adapts_default_crop_to_the_data(workspace: Path, resdsl_cli) -> None:
    # before: the paper's CIFAR default (pad 4, crop 32, flip) failed on these 12x12 images
    spec = (workspace / "tiny.res").read_text()
    (workspace / "bare.res").write_text(spec[:spec.index("  train {")] + "}\n")
    result = resdsl_cli("train", "bare.res", "--dataset", "mnist", "--out", "run", *QUICK, "--iterations", "2",
                        "--batch", "32", "--split", "32", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "run" / "config.json").read_text())["recipe"]["augment"]["crop"] == 12
