"""benchmarks/train_step.py's compiled training step: its options change the speed, never the loss curve."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import resdsl

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "train_step.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def _losses(model: torch.nn.Module, steps: int, *, compiled: bool, compile_optimizer: bool = False,
            channels_last: bool = False, forward_backward: bool = False,
            compiled_autograd: bool = False) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=generator)
    y = torch.randint(10, (8,), generator=generator)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    module = torch.compile(model) if compiled and not forward_backward else model
    with torch._dynamo.config.patch(compiled_autograd=compiled_autograd):
        step = _script()._train_step(module, x, y, None, compile_optimizer, forward_backward)
        return [step().item() for _ in range(steps)]


@pytest.mark.slow  # inductor compiles the forward, the backward and the SGD update: minutes on 2 cores
@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"compile_optimizer": True},
                                     {"forward_backward": True, "compiled_autograd": True, "channels_last": True}],
                         ids=["compiled", "channels-last", "optimizer-compiled", "compiled-autograd"])
def test_compiled_steps_follow_the_eager_loss_curve(options: dict[str, bool]) -> None:
    model = resdsl.compile(ROOT / "specs" / "cifar20.res").to_torch(seed=0)
    eager = _losses(copy.deepcopy(model), 4, compiled=False)
    compiled = _losses(model, 4, compiled=True, **options)
    assert eager[0] > eager[-1]  # the steps train: a curve, not four equal numbers
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--inductor", "no_such_option=1"], "--inductor no_such_option=1: torch._inductor.config has no no_such_option"),
    (["--compiled-autograd"], "--compiled-autograd needs --compile-forward-backward"),
    (["--clock", "cpu", "--threads", "2"], "--clock cpu needs --threads 1 and --device cpu"),
], ids=["unknown-inductor-setting", "compiled-autograd-alone", "cpu-clock-two-threads"])
def test_a_bad_combination_of_flags_is_a_usage_error(arguments: list[str], message: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *arguments])
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    with pytest.raises(SystemExit) as exited:
        _script().main()
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert threads == []  # refused before it set anything
