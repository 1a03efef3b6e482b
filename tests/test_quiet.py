"""Our own commands print what the user asked for and nothing else: no warnings from the packages they use, nor
from pytest's configuration (packaging's are checked in tests/test_install.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parent.parent

# The CLI with torchvision absent as importlib sees it (`find_spec` is None), as after `pip install 'resdsl[onnx]'`.
CLI_WITHOUT_TORCHVISION = """
import sys
sys.modules["torchvision"] = None
sys.argv[0] = "resdsl"
from resdsl.cli.app import main
main()
"""


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_build_export_prints_nothing_on_stderr(tmp_path):
    done = _run("-m", "resdsl.cli", "build", "cifar20", "--backend", "export", "-o", str(tmp_path / "c20.pt2"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_onnx_build_without_torchvision_prints_no_skipped_op_warnings(tmp_path):
    output = tmp_path / "c20.onnx"
    done = _run("-c", CLI_WITHOUT_TORCHVISION, "build", "cifar20", "--backend", "onnx", "-o", str(output))
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr
    assert done.stderr == ""


def test_pytest_configuration_raises_no_warning():
    done = _run("-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "tests/test_names.py")
    assert done.returncode == 0, done.stdout
    assert "Warning" not in done.stdout + done.stderr
