"""benchmarks/gpu_check.sh refuses in one sentence where torch sees no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_gpu_check_refuses_without_a_gpu(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable})
    assert result.returncode == 1
    assert result.stderr == ("error: benchmarks/gpu_check.sh needs an NVIDIA GPU that torch can see, "
                             "and there is none here\n")
    assert result.stdout == ""
