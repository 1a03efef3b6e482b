"""What every deployment backend shares: precisions as dtypes, and an artifact's error against PyTorch."""

from __future__ import annotations

import copy

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cast(model: torch.nn.Module, example: torch.Tensor, precision: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (a copy unless fp32) and its example input in the precision's dtype."""
    dtype = DTYPES[precision]
    return (model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)), example.to(dtype)


def output_errors(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    """Max absolute error, the same relative to max |expected|, and cosine similarity (in fp64)."""
    a = torch.as_tensor(actual).detach().to("cpu", torch.float64).flatten()
    e = torch.as_tensor(expected).detach().to("cpu", torch.float64).flatten()
    diff = (a - e).abs().max().item()
    return {
        "max_abs": diff,
        "max_rel": diff / max(e.abs().max().item(), 1e-30),
        "cosine": torch.nn.functional.cosine_similarity(a, e, dim=0).item(),
    }
