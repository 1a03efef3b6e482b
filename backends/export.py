"""`torch.export` ExportedProgram (`.pt2`): loads anywhere with `torch.export.load(path).module()`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from resdsl.backends import BatchProfile, BuildReport
from resdsl.backends.artifact import cast, output_errors


def exported_program(model: torch.nn.Module, example: torch.Tensor,
                     batch: BatchProfile) -> torch.export.ExportedProgram:
    """The model traced by torch.export, with a symbolic batch dimension when the profile is dynamic."""
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    return torch.export.export(model, (example,), dynamic_shapes=dynamic)


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, precision: str, batch: BatchProfile,
          expected: torch.Tensor) -> BuildReport:
    """Export, save, load back and compare with the PyTorch output."""
    model, example = cast(model, example, precision)
    with out.open("wb") as file:  # a file object, so any file name works, not only *.pt2
        torch.export.save(exported_program(model, example, batch), file)
    with torch.no_grad():
        actual = load(out, "cpu")(example.cpu())
    return BuildReport(files=[out.name], precision=precision, batch=batch,
                       errors=output_errors(actual, expected), checked_with="torch.export.load")


def load(path: Path, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    with Path(path).open("rb") as file:
        return torch.export.load(file).module().to(device)
