"""End to end on real data: ResNet-20 (specs/cifar20.res) on Fashion-MNIST from the Debian package, on CPU.

A smaller budget than docs/benchmarks.md's "Training (Fashion-MNIST smoke run)": 200 iterations of batch 32 (6,400
images, an eighth of that run's), scored on the first 500 test images; about half a minute of CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
SPEC = Path(__file__).parent.parent / "specs" / "cifar20.res"

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package fashion-mnist")]


def test_cifar20_learns_fashion_mnist_in_200_iterations_of_batch_32(tmp_path: Path, resdsl_cli) -> None:
    result = resdsl_cli("train", str(SPEC), "--dataset", "fashion-mnist", "--out", "run", "--iterations", "200",
                        "--batch", "32", "--schedule", "steps(140: 0.1)", "--eval-every", "100", "--log-every", "25",
                        "--limit-eval", "500", "--checkpoint-every", "100", "--device", "cpu", cwd=tmp_path,
                        timeout=3600)
    assert result.returncode == 0, result.stderr
    assert "recompiled for fashion-mnist's 1x28x28 images" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in tests] == [100, 200]
    assert tests[-1]["test_error"] < 0.40  # chance is 0.90; measured 0.308 on the first 500 test images
    plot = resdsl_cli("plot", "run", "-o", "curves.png", cwd=tmp_path, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
