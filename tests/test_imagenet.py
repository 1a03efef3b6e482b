"""The paper's ImageNet run in miniature: ResNet-18 at 64x64 on a JPEG folder, with decoding workers,
resumed after SIGKILL, and on two gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from measured import Finished
from typer.testing import CliRunner

from resdsl.cli.app import app
from resdsl.train.checkpoint import load

pytestmark = [pytest.mark.torch, pytest.mark.xdist_group("imagenet")]  # its runs, trained once

SPECS = Path(__file__).resolve().parent.parent / "specs"
# the paper's recipe at 64x64 for 10 classes: scale [72, 128] is [256, 480] times 64/224, rounded
RUN = ["--recipe", "augment scale range(72, 128), crop 64, flip, lighting 0.1", "--batch", "8",
       "--iterations", "4", "--checkpoint-every", "2", "--log-every", "1", "--eval-every", "4", "--limit-eval", "20",
       "--workers", "2", "--seed", "7", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, jpeg_folder: Path) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    (root / "r18.res").write_text(f'network r18 extends "{SPECS / "resnet18.res"}" {{\n'
                                  "  head { avgpool; fc: linear 10 }\n}\n")
    return root


def _train(resdsl_cli, workspace: Path, folder: Path, out: str, *extra: str, script: str | None = None) -> Finished:
    """`resdsl train` (or `python -c script`) of r18.res on `folder` into `out`, forked from the zygote."""
    return resdsl_cli("train", "r18.res", "--data", str(folder), "--out", out, *RUN, *extra, cwd=workspace,
                      script=script, timeout=300)


@pytest.fixture(scope="module")
def straight(resdsl_cli, workspace: Path, jpeg_folder: Path) -> Finished:
    result = _train(resdsl_cli, workspace, jpeg_folder, "straight")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_folder_run_trains_resnet18_at_64_with_the_papers_recipe(workspace: Path, jpeg_folder: Path,
                                                                   straight: Finished) -> None:
    assert f"300 training images from {jpeg_folder.resolve()}," in straight.stdout
    assert "r18: recompiled for imagenet's 3x64x64 crops (the spec says 3x224x224)" in straight.stdout
    saved = load(workspace / "straight" / "last.pt")
    assert saved["iteration"] == 4
    assert saved["mean"].shape == (3, 64, 64)
    assert saved["recipe"]["schedule"]["kind"] == "plateau" and saved["recipe"]["augment"]["lighting"] == 0.1


def test_folder_run_resumes_bit_exact_after_sigkill(resdsl_cli, workspace: Path, jpeg_folder: Path,
                                                     straight: Finished,
                                                     sigkill_after_checkpoint: Callable[[int], str]) -> None:
    killed = _train(resdsl_cli, workspace, jpeg_folder, "killed", script=sigkill_after_checkpoint(2))
    assert killed.returncode == -signal.SIGKILL
    assert load(workspace / "killed" / "last.pt")["iteration"] == 2
    resumed = _train(resdsl_cli, workspace, jpeg_folder, "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, reference = load(workspace / "killed" / "last.pt"), load(workspace / "straight" / "last.pt")
    assert ours["iteration"] == reference["iteration"] == 4
    for name, tensor in reference["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


def test_folder_run_on_two_gloo_processes_stays_in_sync(workspace: Path, jpeg_folder: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "resdsl", "train", "r18.res", "--data", str(jpeg_folder), "--out", "ddp", *RUN, "--iterations", "2",
               "--workers", "1"]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    digests = json.loads((workspace / "ddp" / "ranks.json").read_text())["digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert load(workspace / "ddp" / "last.pt")["iteration"] == 2


def test_nonexistent_data_is_refused_in_one_sentence(workspace: Path) -> None:
    nowhere = workspace / "no-such-folder"
    result = CliRunner().invoke(app, ["train", str(workspace / "r18.res"), "--data", str(nowhere),
                                      "--out", str(workspace / "nowhere")])
    assert result.exit_code == 1
    assert result.stderr == f"error: no imagenet data found in {nowhere}: {nowhere} does not exist\n"
    assert not (workspace / "nowhere").exists()
