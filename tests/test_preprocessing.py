"""Input statistics and weights are checked as they will be used: a mean or std that is NaN, infinite, zero or
denormal in float32, a checkpoint field of the wrong type, weights that are NaN, complex, meta or sparse, each
refused in one sentence (exit 1, or 2 for a flag) before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app
from resdsl.train.checkpoint import load
from resdsl.weights import WeightsError, read_weights

pytestmark = pytest.mark.torch

CIFAR20 = str(Path(__file__).resolve().parent.parent / "specs" / "cifar20.res")


def build(tmp_path: Path, *flags: object):
    return CliRunner().invoke(app, ["build", CIFAR20, "--backend", "export", "-o", str(tmp_path / "out" / "c.pt2"),
                                    *map(str, flags)])


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return resdsl.compile(CIFAR20).to_torch(seed=0).state_dict()


def saved(tmp_path: Path, content: object) -> Path:
    torch.save(content, tmp_path / "w.pt")
    return tmp_path / "w.pt"


@pytest.mark.parametrize(("flags", "message"), [
    (("--std", "1e-50,1,1"), "--std 1e-50,1,1 is zero or negative in float32 (a std must be positive)"),
    (("--std", "1e-39,1,1"), "--std 1e-39,1,1 is denormal in float32 (non-zero but under 1.2e-38)"),
    (("--mean", "1e39,0,0"), "--mean 1e+39,0,0 is NaN or infinite in float32"),
])
def test_build_checks_mean_and_std_flags_in_float32(tmp_path: Path, flags: tuple[str, ...], message: str):
    result = build(tmp_path, *flags)
    assert (result.exit_code, result.stderr) == (2, f"error: {message}\n")
    assert not (tmp_path / "out").exists()


def test_build_refuses_a_recorded_std_that_is_zero_in_float32(tmp_path: Path, state):
    std = torch.tensor([0.2, 1e-50, 0.2], dtype=torch.float64)
    weights = saved(tmp_path, {"model": state, "mean": torch.full((3,), 0.5), "std": std})
    result = build(tmp_path, "--weights", weights)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {weights} records a std that is zero or negative in float32 (a std must be "
                             "positive); build with --raw-input, or give --mean/--std\n")
    assert not (tmp_path / "out").exists()


def test_build_refuses_weights_holding_nan(tmp_path: Path, state):
    bad = {**state, "layer1.0.bn1.running_var": torch.full_like(state["layer1.0.bn1.running_var"], float("nan"))}
    weights = saved(tmp_path, bad)
    result = build(tmp_path, "--weights", weights)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {weights} holds NaN or infinite values in layer1.0.bn1.running_var: the "
                             "weights of a run that diverged, which give no meaningful output\n")


def test_build_refuses_complex_weights_instead_of_dropping_their_imaginary_part(tmp_path: Path, state):
    weights = saved(tmp_path, {**state, "conv1.weight": state["conv1.weight"].to(torch.complex64) * (1 + 1j)})
    result = build(tmp_path, "--weights", weights)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {weights} holds a complex tensor conv1.weight, and resdsl loads only dense "
                             "real-valued tensors with their values; save the weights with "
                             "torch.save(model.state_dict(), path)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("tensor", "kind"), [
    (torch.empty(16, 3, 3, 3, device="meta"), "a meta (shape-only, valueless) tensor"),
    (torch.zeros(16, 3, 3, 3).to_sparse(), "a sparse tensor"),
])
def test_reading_weights_refuses_tensors_without_dense_values(tmp_path: Path, state, tensor: torch.Tensor,
                                                               kind: str):
    weights = saved(tmp_path, {**state, "conv1.weight": tensor})
    with pytest.raises(WeightsError, match=re.escape(f"{weights} holds {kind} conv1.weight, and resdsl loads only")):
        read_weights(weights)


def test_a_load_state_dict_failure_keeps_its_reason_not_only_its_first_line():
    from resdsl.weights import load_failure

    with pytest.raises(RuntimeError) as caught:
        torch.nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(3, 3), "bias": torch.zeros(2)})
    reason = load_failure(caught.value)
    assert reason.startswith("size mismatch for weight: copying a param with shape torch.Size([3, 3])")
    assert "\n" not in reason


def train(workspace: Path, run: Path, iterations: int, *flags: str):
    return CliRunner().invoke(app, ["train", str(workspace / "tiny.res"), "--out", str(run), "--data",
                                    str(workspace / "data"), "--iterations", str(iterations),
                                    "--checkpoint-every", "4", "--eval-every", "100", "--device", "cpu", *flags])


@pytest.fixture
def run(tiny_workspace: Path, tmp_path: Path) -> Path:
    """A run folder after 4 iterations of tiny.res."""
    assert train(tiny_workspace, tmp_path / "run", 4).exit_code == 0
    return tmp_path / "run"


def test_resume_says_why_the_checkpoints_weights_do_not_load(tiny_workspace: Path, run: Path):
    """load_state_dict's first line says only that loading failed; the reason is on the next ones."""
    saved = load(run / "last.pt")
    saved["model"]["conv1.weight"] = torch.zeros(8, 1, 5, 5)
    torch.save(saved, run / "last.pt")
    result = train(tiny_workspace, run, 8, "--resume")
    assert result.exit_code == 1
    assert (f"error: cannot resume: {run / 'last.pt'} does not fit this network (size mismatch for conv1.weight: "
            "copying a param with shape torch.Size([8, 1, 5, 5]) from checkpoint") in result.stderr


@pytest.mark.parametrize(("field", "value", "what"), [
    ("iteration", "4", "a str, not a whole number"),
    ("mean", [0.5], "a list, not a tensor"),
    ("loader", 3, "an int, not a loader state"),
])
def test_resume_refuses_a_checkpoint_field_of_the_wrong_type(tiny_workspace: Path, run: Path, field: str,
                                                             value: object, what: str):
    torch.save({**load(run / "last.pt"), field: value}, run / "last.pt")
    result = train(tiny_workspace, run, 8, "--resume")
    assert result.exit_code == 1
    assert result.stderr.endswith(f"error: cannot resume: {run / 'last.pt'} records a {field} that is {what}\n")
    assert "Traceback" not in result.output
