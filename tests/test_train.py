"""`resdsl train`, `eval` and `plot` end to end on a tiny idx dataset and a tiny network, in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.train.checkpoint import CheckpointError, load

SPEC = """\
network tiny {
  input 1x12x12
  stem { conv1: conv 3x3, 8; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 1 x 8
    layer2: 1 x 16, stride 2
  }
  head { avgpool; fc: linear 10 }
  train {
    dataset mnist
    split 32
    batch 32
    lr 0.05
    momentum 0.9
    weight_decay 5e-4
    schedule steps(6: 0.1)
    iterations 12
    augment pad 2, crop 12, flip
    mean_subtract
  }
}
"""
QUICK = ["--checkpoint-every", "4", "--log-every", "2", "--eval-every", "6", "--seed", "3", "--device", "cpu"]


def _write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A spec and an idx dataset (256 train, 64 test images of 12x12) whose class is a bright row."""
    root = tmp_path_factory.mktemp("train")
    (root / "tiny.res").write_text(SPEC)
    data = root / "data"
    data.mkdir()
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", 256), ("t10k", 64)):
        labels = torch.randint(10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 12, 12), generator=generator)
        images[torch.arange(count), labels + 1] = 250
        _write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(data / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def _resdsl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 180,
            entry: tuple[str, str] = ("-m", "resdsl")) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=timeout)


def _train(workspace: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    return _resdsl("train", "tiny.res", "--data", "data", "--out", out, *QUICK, *extra, cwd=workspace)


# `resdsl train ...` that dies by SIGKILL right after saving the checkpoint of iteration 8.
KILLED_AFTER_CHECKPOINT_8 = """
import os, signal, sys
from resdsl.train import checkpoint
from resdsl.cli.app import main
save = checkpoint.save
def save_then_die(path, state):
    save(path, state)
    if state["iteration"] == 8:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
sys.argv[0] = "resdsl"
main()
"""


@pytest.fixture(scope="module")
def finished(workspace: Path) -> Path:
    """An uninterrupted 12-iteration run."""
    result = _train(workspace, "straight")
    assert result.returncode == 0, result.stderr
    return workspace / "straight"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_metrics_config_spec_and_checkpoints(finished: Path):
    assert {p.name for p in finished.iterdir()} >= {"metrics.jsonl", "config.json", "spec.res", "last.pt", "best.pt"}
    assert json.loads((finished / "config.json").read_text())["recipe"]["lr"] == 0.05
    assert "network tiny" in (finished / "spec.res").read_text()
    saved = load(finished / "last.pt")
    assert saved["iteration"] == 12


def test_metrics_follow_the_step_schedule(finished: Path):
    steps = [m for m in _metrics(finished) if "train_error" in m]
    assert [m["iteration"] for m in steps] == [2, 4, 6, 8, 10, 12]
    # lr of the last step logged: steps 0..5 at 0.05, from step 6 on 0.005
    assert [m["lr"] for m in steps] == pytest.approx([0.05, 0.05, 0.05, 0.005, 0.005, 0.005])
    assert {"epoch", "train_loss", "images_per_s"} <= set(steps[0])
    evals = [m for m in _metrics(finished) if "test_error" in m]
    assert [m["iteration"] for m in evals] == [6, 12] and all("val_error" in m for m in evals)


def test_resume_after_sigkill_ends_bit_identical(workspace: Path, finished: Path):
    killed = _resdsl("train", "tiny.res", "--data", "data", "--out", "killed", *QUICK, cwd=workspace,
                     entry=("-c", KILLED_AFTER_CHECKPOINT_8))
    assert killed.returncode == -signal.SIGKILL
    assert load(workspace / "killed" / "last.pt")["iteration"] == 8
    resumed = _train(workspace, "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ours, reference = load(workspace / "killed" / "last.pt"), load(finished / "last.pt")
    assert ours["iteration"] == reference["iteration"] == 12
    assert ours["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    assert [m["iteration"] for m in _metrics(workspace / "killed")] == [m["iteration"] for m in _metrics(finished)]


def test_truncated_checkpoint_is_refused(workspace: Path, finished: Path):
    out = workspace / "truncated"
    out.mkdir()
    data = (finished / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    result = _train(workspace, "truncated", "--resume")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot resume: ") and "not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_garbage_checkpoint_is_refused_by_load():
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"garbage-{os.getpid()}.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip file")
    try:
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load(path)
    finally:
        path.unlink()


def test_existing_run_is_not_overwritten_without_resume(workspace: Path, finished: Path):
    before = (finished / "last.pt").read_bytes()
    result = _train(workspace, "straight")
    assert result.returncode == 1 and "pass --resume" in result.stderr
    assert (finished / "last.pt").read_bytes() == before


def test_ctrl_c_checkpoints_and_exits_130(workspace: Path):
    command = [sys.executable, "-m", "resdsl", "train", "tiny.res", "--data", "data", "--out", "interrupted",
               *QUICK, "--iterations", "100000"]
    process = subprocess.Popen(command, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = workspace / "interrupted" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    saved = load(workspace / "interrupted" / "last.pt")
    assert 2 <= saved["iteration"] < 100000


def test_missing_data_is_one_sentence(workspace: Path):
    result = _resdsl("train", "tiny.res", "--data", "nowhere", "--out", "none", cwd=workspace,
                     env={"RESDSL_DATA": str(workspace / "empty"), "HOME": str(workspace / "home")})
    assert result.returncode == 1
    assert result.stderr.startswith("error: no mnist data found in nowhere") and result.stderr.count("\n") == 1


def test_bad_recipe_flag_points_at_it(workspace: Path):
    result = _resdsl("train", "tiny.res", "--lr", "-1", cwd=workspace)
    assert result.returncode == 1
    assert "<--lr>:2:4: error: the learning rate must be positive" in result.stderr


def _error_by_hand(workspace: Path, state: dict, mean: torch.Tensor) -> float:
    """The test error computed here, independently of resdsl's evaluation code."""
    from resdsl.data import load_dataset

    model = resdsl.compile(str(workspace / "tiny.res")).to_torch()
    model.load_state_dict(state)
    model.eval()
    test = load_dataset("mnist", workspace / "data", train=False)
    with torch.no_grad():
        logits = model(test.images.float() / 255 - mean)
    return float((logits.argmax(1) != test.labels).float().mean())


def test_eval_prints_the_test_error_of_a_checkpoint_and_a_bare_state_dict(workspace: Path, finished: Path):
    saved = load(finished / "last.pt")
    expected = f"error {100 * _error_by_hand(workspace, saved['model'], saved['mean']):.2f}%"
    result = _resdsl("eval", "tiny.res", "--weights", str(finished / "last.pt"), "--data", "data", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    torch.save(saved["model"], workspace / "bare.pt")
    result = _resdsl("eval", "tiny.res", "--weights", "bare.pt", "--data", "data", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "64 images" in result.stdout


def test_eval_refuses_a_truncated_checkpoint(workspace: Path, finished: Path):
    data = (finished / "last.pt").read_bytes()
    (workspace / "half.pt").write_bytes(data[: len(data) // 3])
    result = _resdsl("eval", "tiny.res", "--weights", "half.pt", "--data", "data", cwd=workspace)
    assert result.returncode == 1 and "not a readable checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_plot_writes_a_png(workspace: Path, finished: Path):
    result = _resdsl("plot", "straight", "-o", "curves.png", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_directory_without_metrics_is_refused(workspace: Path):
    (workspace / "empty_run").mkdir(exist_ok=True)
    result = _resdsl("plot", "empty_run", "-o", "none.png", cwd=workspace)
    assert result.returncode == 1 and "has no metrics.jsonl" in result.stderr
    assert not (workspace / "none.png").exists()


def test_two_cpu_processes_stay_in_sync(workspace: Path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "resdsl", "train", "tiny.res", "--data", "data", "--out", "ddp", *QUICK, "--iterations", "6"]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    digests = json.loads((workspace / "ddp" / "ranks.json").read_text())["digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_until_train_error_warmup_holds_its_lr_until_the_error_drops(workspace: Path):
    # every window's error is below 100%, so the warm-up ends at the first log line (iteration 2)
    result = _train(workspace, "warm", "--iterations", "6", "--warmup", "lr 0.01, until_train_error 1.0",
                    "--schedule", "constant()")
    assert result.returncode == 0, result.stderr
    steps = [m for m in _metrics(workspace / "warm") if "train_error" in m]
    assert [m["lr"] for m in steps] == [0.01, 0.05, 0.05]


def _write_cifar_batch(path: Path, count: int, generator: torch.Generator) -> None:
    import pickle

    import numpy as np

    data = torch.randint(0, 256, (count, 3072), generator=generator, dtype=torch.uint8).numpy()
    labels = torch.randint(10, (count,), generator=generator).tolist()
    with path.open("wb") as file:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": np.asarray(data),
                     b"filenames": [b"x.png"] * count}, file)


def test_cifar110_spec_alone_finds_cifar10_in_resdsl_data(tmp_path: Path):
    folder = tmp_path / "store" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _write_cifar_batch(folder / name, 1010, generator)  # 5050 training images: enough for the 5k split
    spec = Path(resdsl.__file__).parent.parent / "specs" / "cifar110.res"
    result = _resdsl("train", str(spec), "--iterations", "1", "--batch", "4", "--limit-eval", "8", "--out", "run",
                     cwd=tmp_path, env={"RESDSL_DATA": str(tmp_path / "store")})
    assert result.returncode == 0, result.stderr
    assert "50 training images" in result.stdout  # 5050 less the paper's 5000 held out
    assert load(tmp_path / "run" / "last.pt")["iteration"] == 1
