"""`resdsl build` verifies every artifact against the unfolded fp32 PyTorch model and refuses one outside the
tolerance of docs/deploy.md: exit 1, one sentence with the figures, nothing of the build left, a user's existing
file unchanged; `--no-verify` writes it anyway."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import resdsl
from resdsl.backends import export as export_backend
from resdsl.backends import reparam
from resdsl.cli.app import app

pytestmark = pytest.mark.torch

CIFAR20 = str(Path(__file__).resolve().parent.parent / "specs" / "cifar20.res")
REWRITE = reparam.reparameterize  # what build runs: branches merged, then BatchNorm folded


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def off_by_one_percent(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its first weight 1% too large: an artifact that is wrong but runs."""
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    return model


@pytest.fixture
def wrong_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reparam, "reparameterize", lambda model: off_by_one_percent(REWRITE(model)))


def test_a_wrong_fold_fails_the_build_and_leaves_nothing(wrong_fold, tmp_path: Path):
    result = run("build", CIFAR20, "--backend", "onnx", "-o", tmp_path / "c20.onnx")
    assert result.exit_code == 1
    assert "error: the onnx artifact failed verification: max rel err" in result.output
    assert "over the fp32 tolerance 1e-04" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_backend_that_writes_a_wrong_artifact_fails_the_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    original = export_backend.build
    monkeypatch.setattr(export_backend, "build", lambda model, *args, **kwargs:
                        original(off_by_one_percent(model), *args, **kwargs))
    result = run("build", CIFAR20, "--backend", "pytorch", "-o", tmp_path / "c20.pt2")
    assert result.exit_code == 1
    assert "the pytorch artifact failed verification" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_failed_verification_keeps_the_users_existing_artifact(wrong_fold, tmp_path: Path):
    out = tmp_path / "c20.pt2"
    out.write_text("previous")
    (tmp_path / "c20.pt2.json").write_text("{}")
    result = run("build", CIFAR20, "--backend", "export", "-o", out)
    assert result.exit_code == 1
    assert "the existing c20.pt2 is unchanged" in result.output
    assert out.read_text() == "previous"
    assert (tmp_path / "c20.pt2.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c20.pt2", "c20.pt2.json"]


def test_no_verify_writes_an_artifact_outside_the_tolerance_and_says_so(wrong_fold, tmp_path: Path):
    out = tmp_path / "c20.onnx"
    result = run("build", CIFAR20, "--backend", "onnx", "-o", out, "--no-verify")
    assert result.exit_code == 0, result.output
    assert "(not verified: --no-verify)" in result.output
    assert out.is_file()


def test_weights_whose_pytorch_output_overflows_fail_verification(tmp_path: Path):
    """Finite weights that overflow fp32 (every BN scales by 1e10): there is nothing to check the artifact with."""
    model = resdsl.compile(CIFAR20).to_torch(seed=0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1e10)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    result = run("build", CIFAR20, "--backend", "export", "-o", tmp_path / "out" / "c20.pt2",
                 "--weights", tmp_path / "w.pt")
    assert result.exit_code == 1
    assert "the PyTorch model's own output is not finite with these weights" in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "w.pt"]  # not even the folder the build made for -o


@pytest.mark.parametrize(("errors", "failed"), [
    ({"max_abs": 1.0, "max_rel": 2e-4, "cosine": 1.0}, "max rel err 2.00e-04 is over the fp32 tolerance 1e-04"),
    ({"max_abs": 1.0, "max_rel": 1e-5, "cosine": 0.9999}, "cosine 0.999900 is under the fp32 minimum 0.99999"),
    ({"max_abs": float("nan"), "max_rel": float("nan"), "cosine": float("nan")},
     "max rel err nan is over the fp32 tolerance 1e-04 and cosine nan is under the fp32 minimum 0.99999"),
])
def test_the_tolerance_names_each_check_that_fails(errors: dict[str, float], failed: str):
    from resdsl.backends import TOLERANCES

    assert TOLERANCES["fp32"].exceeded(errors, "fp32") == failed


def test_errors_within_the_tolerance_pass():
    from resdsl.backends import Tolerance

    assert Tolerance(1e-4, 0.99999).exceeded({"max_abs": 1.0, "max_rel": 1e-4, "cosine": 0.99999}, "fp32") is None


def test_tensorrt_fp32_has_the_tf32_tolerance_and_other_backends_the_precisions():
    from resdsl.backends import TOLERANCES, tolerance

    assert tolerance("tensorrt", "fp32").max_rel == 1e-2
    assert tolerance("onnx", "fp32") == TOLERANCES["fp32"]
    assert tolerance("tensorrt", "fp16") == TOLERANCES["fp16"]
