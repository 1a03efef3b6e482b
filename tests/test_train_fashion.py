"""End to end on real data: ResNet-20 (specs/cifar20.res) on Fashion-MNIST from the Debian package, on CPU.

The same command as docs/benchmarks.md's "Training (Fashion-MNIST smoke run)"; about 2 minutes on 2 idle cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
SPEC = Path(__file__).parent.parent / "specs" / "cifar20.res"

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package fashion-mnist")]


def test_cifar20_learns_fashion_mnist_in_400_iterations(tmp_path: Path):
    command = [sys.executable, "-m", "resdsl", "train", str(SPEC), "--dataset", "fashion-mnist", "--out", "run",
               "--iterations", "400", "--batch", "128", "--schedule", "steps(300: 0.1)", "--eval-every", "200",
               "--log-every", "50", "--limit-eval", "2000", "--checkpoint-every", "200", "--device", "cpu"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=3600, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "recompiled for fashion-mnist's 1x28x28 images" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in tests] == [200, 400]
    assert tests[-1]["test_error"] < 0.20  # chance is 0.90
    plot = subprocess.run([sys.executable, "-m", "resdsl", "plot", "run", "-o", "curves.png"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
