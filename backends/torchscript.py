"""A traced TorchScript module (`torch.jit.save`), for runtimes that still take TorchScript (deprecated upstream)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resdsl.backends import BatchProfile, BuildReport
from resdsl.backends.artifact import output_errors, write_serialized, write_sidecar


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, batch: BatchProfile, expected: Any,
          metadata: dict[str, Any]) -> BuildReport:
    """Trace at the example batch (the traced graph has no batch-size constant), save, load back, compare."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, strict=False)  # strict=False: dict outputs are allowed
        write_serialized(out, lambda file: torch.jit.save(traced, file))
        actual = load(out, "cpu")(example)
    return BuildReport(files=[out.name, write_sidecar(out, metadata)], batch=batch,
                       errors=output_errors(actual, expected), checked_with="torch.jit.load")


def load(path: Path, device: str) -> Callable[[torch.Tensor], Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device)
