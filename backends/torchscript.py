"""A traced TorchScript module (`torch.jit.save`), for runtimes that still take TorchScript (deprecated upstream)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from resdsl.backends import BatchProfile, BuildReport
from resdsl.backends.artifact import cast, output_errors


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, precision: str, batch: BatchProfile,
          expected: torch.Tensor) -> BuildReport:
    """Trace at the example batch (the traced graph has no batch-size constant), save, load back, compare."""
    model, example = cast(model, example, precision)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), str(out))
        actual = torch.jit.load(str(out))(example)
    return BuildReport(files=[out.name], precision=precision, batch=batch,
                       errors=output_errors(actual, expected), checked_with="torch.jit.load")


def load(path: Path, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device)
