"""`resdsl train --compile` on a CPU: the trainer's compiled step, channels-last, against the eager step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_SPEC

import resdsl
from resdsl.recipe import Recipe
from resdsl.train import RunConfig
from resdsl.train.distributed import Context
from resdsl.train.trainer import Trainer

pytestmark = pytest.mark.torch

CPU = Context(0, 1, torch.device("cpu"))
RECIPE = Recipe(lr=0.1, momentum=0.9, weight_decay=1e-4)


def _trainer(out: Path, *, compile: bool) -> Trainer:
    return Trainer(resdsl.compile(TINY_SPEC), RECIPE, RunConfig(recipe=RECIPE, out=out, seed=3, compile=compile), CPU,
                   print)


def _losses(trainer: Trainer, steps: int) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(8, 1, 12, 12, generator=generator), torch.arange(8)
    return [trainer.step(images, labels, 0.1, lambda batch, _: batch, iteration=i)[0] for i in range(steps)]


def test_a_compiled_trainer_on_a_cpu_keeps_its_convolutions_channels_last(tmp_path: Path) -> None:
    weights = [p for p in _trainer(tmp_path, compile=True).model.parameters() if p.dim() == 4 and p.size(1) > 1]
    assert weights
    assert all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights)


def test_the_compiled_trainer_step_follows_the_eager_loss_curve(tmp_path: Path) -> None:
    eager = _losses(_trainer(tmp_path, compile=False), 4)
    compiled = _losses(_trainer(tmp_path, compile=True), 4)
    assert eager[0] > eager[-1]  # the steps train: a curve, not four equal numbers
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
