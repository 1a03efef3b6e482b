"""`torch.export` ExportedProgram (`.pt2`): loads anywhere with `torch.export.load(path).module()`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resdsl.backends import BatchProfile, BuildReport
from resdsl.backends.artifact import output_errors, write_serialized, write_sidecar


def exported_program(model: torch.nn.Module, example: torch.Tensor,
                     batch: BatchProfile) -> torch.export.ExportedProgram:
    """The model traced by torch.export, with a symbolic batch dimension when the profile is dynamic."""
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    return torch.export.export(model, (example,), dynamic_shapes=dynamic)


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, batch: BatchProfile, expected: Any,
          metadata: dict[str, Any]) -> BuildReport:
    """Export, save with its JSON sidecar, load back and compare with the PyTorch output."""
    program = exported_program(model, example, batch)
    write_serialized(out, lambda file: torch.export.save(program, file))
    with torch.no_grad():
        actual = load(out, "cpu")(example.cpu())
    return BuildReport(files=[out.name, write_sidecar(out, metadata)], batch=batch,
                       errors=output_errors(actual, expected), checked_with="torch.export.load")


def load(path: Path, device: str) -> Callable[[torch.Tensor], Any]:
    with Path(path).open("rb") as file:  # a file object, so any file name works, not only *.pt2
        return torch.export.load(file).module().to(device)
