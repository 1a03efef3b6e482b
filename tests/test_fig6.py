"""benchmarks/fig6.sh end to end on the tiny idx dataset: two nets, four iterations, the table and the plot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fig6.sh"
TINY = ["--split", "32", "--batch", "8", "--limit-eval", "16", "--device", "cpu"]
# PAPER.md, Table 6: ResNet-20 has 269,722 params on 3-channel CIFAR images; on 1-channel images the 3x3 stem conv
# of 16 filters has 2 x 9 x 16 weights fewer. Option A shortcuts have no params, so plain-20 has as many as ResNet-20.
RESNET20_ONE_CHANNEL = 269_722 - 2 * 9 * 16

pytestmark = pytest.mark.xdist_group("fig6")  # the benchmark fixture, run once


def fig6(cwd: Path, *arguments: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path if path is not None else f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHON": sys.executable}
    env.pop("CIFAR10_DIR", None)
    return subprocess.run(["bash", str(SCRIPT), *arguments], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env)


@pytest.fixture(scope="module")
def benchmark(tiny_workspace: Path) -> subprocess.CompletedProcess[str]:
    return fig6(tiny_workspace, "--iterations", "4", "--nets", "plain20 resnet20", "--data", "data", "--out", "fig6",
                "--", *TINY)


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| plain") or line.startswith("| resnet")]


@pytest.mark.torch
def test_table_lists_each_net_with_the_papers_params(benchmark, tiny_workspace: Path):
    assert benchmark.returncode == 0, benchmark.stderr
    rows = table_rows((tiny_workspace / "fig6" / "fig6.md").read_text())
    assert [row[:3] for row in rows] == [["plain20", "20", f"{RESNET20_ONE_CHANNEL:,}"],
                                         ["resnet20", "20", f"{RESNET20_ONE_CHANNEL:,}"]]
    for row in rows:
        assert 0 <= float(row[3]) <= 100 and 0 <= float(row[4]) <= 100
        assert row[5] == "4"


@pytest.mark.torch
def test_table_is_printed_as_written(benchmark, tiny_workspace: Path):
    assert benchmark.stdout == (tiny_workspace / "fig6" / "fig6.md").read_text()
    assert "CIFAR-10: skipped" in benchmark.stderr


@pytest.mark.torch
def test_plot_is_a_png(benchmark, tiny_workspace: Path):
    assert (tiny_workspace / "fig6" / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.torch
def test_schedule_steps_at_half_and_three_quarters(benchmark, tiny_workspace: Path):
    spec = (tiny_workspace / "fig6" / "fashion-mnist" / "resnet20" / "spec.res").read_text()
    assert "schedule steps(2: 0.1, 3: 0.1)" in spec
    assert "iterations 4" in spec


@pytest.mark.torch
def test_second_run_keeps_the_finished_runs(benchmark, tiny_workspace: Path):
    metrics = tiny_workspace / "fig6" / "fashion-mnist" / "plain20" / "metrics.jsonl"
    before = metrics.read_text()
    again = fig6(tiny_workspace, "--iterations", "4", "--nets", "plain20", "--data", "data", "--out", "fig6", "--",
                 *TINY)
    assert again.returncode == 0, again.stderr
    assert metrics.read_text() == before
    assert table_rows(again.stdout) == table_rows(benchmark.stdout)[:1]


@pytest.mark.torch
def test_missing_data_is_one_sentence(tmp_path: Path):
    result = fig6(tmp_path, "--iterations", "4", "--nets", "resnet20", "--data", "nowhere", "--out", "out")
    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: ") and "nowhere" in error
    assert result.stdout == ""


def test_missing_resdsl_is_one_sentence(tmp_path: Path):
    result = fig6(tmp_path, "--iterations", "4", path="/usr/bin:/bin")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == ("error: benchmarks/fig6.sh needs resdsl on PATH: activate the venv "
                                              "(. .venv/bin/activate) or pip install -e .")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "error: --iterations must be a positive whole number (the budget), got ''"),
    (["--iterations", "2"], "error: --iterations must be at least 4, so that the schedule's two steps fall inside "
                            "the run"),
    (["--iterations", "8", "--nets", "resnet21"], "error: there is no spec for 'resnet21' (specs/cifar21.res is "
                                                  "missing)"),
    (["--iterations", "8", "--nets", "vgg19"], "error: unknown net 'vgg19': give plainL or resnetL, L a depth of "
                                               "the CIFAR zoo (20, 32, 44, 56, 110)"),
    (["--iterations", "8", "--bogus"], "error: unknown argument '--bogus'"),
])
def test_bad_arguments_are_a_usage_error(tmp_path: Path, arguments: list[str], message: str):
    result = fig6(tmp_path, *arguments)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == message
    assert result.stderr.splitlines()[1].startswith("usage: benchmarks/fig6.sh --iterations N")
    assert not (tmp_path / "runs").exists()


def gpu_check(cwd: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT.parent / "gpu_check.sh"), *arguments], cwd=cwd, capture_output=True,
                          text=True, timeout=120,
                          env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable})


def test_gpu_check_refuses_an_unknown_argument(tmp_path: Path):
    result = gpu_check(tmp_path, "--fig7")
    assert result.returncode == 2
    assert result.stderr == "error: unknown argument '--fig7'\nusage: benchmarks/gpu_check.sh [--fig6]\n"


@pytest.mark.torch
def test_gpu_check_with_fig6_still_needs_a_gpu(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run for hours")
    result = gpu_check(tmp_path, "--fig6")
    assert result.returncode == 1
    assert result.stderr == ("error: benchmarks/gpu_check.sh needs an NVIDIA GPU that torch can see, "
                             "and there is none here\n")
    assert not (tmp_path / "runs").exists()
