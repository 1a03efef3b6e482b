"""What every deployment backend shares: precisions as dtypes, output names and errors, and writing files safely."""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch.utils._pytree import tree_leaves

from resdsl.backends import writing

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cast(model: torch.nn.Module, example: torch.Tensor, precision: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (a copy unless fp32) and its example input in the precision's dtype."""
    dtype = DTYPES[precision]
    return (model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)), example.to(dtype)


def output_names(outputs: Any) -> list[str]:
    """Names for the graph outputs: `output` for one tensor, the keys of a dict, `output0`, `output1`... otherwise."""
    if isinstance(outputs, torch.Tensor):
        return ["output"]
    if isinstance(outputs, dict) and all(isinstance(v, torch.Tensor) for v in outputs.values()):
        return [str(k) for k in outputs]
    return [f"output{i}" for i in range(len(tree_leaves(outputs)))]


def output_errors(actual: Any, expected: Any) -> dict[str, float]:
    """Max absolute error, the same relative to max |expected|, and cosine similarity (in fp64); worst over outputs."""
    pairs = list(zip(tree_leaves(actual), tree_leaves(expected), strict=True))
    errors = [_errors(a, e) for a, e in pairs]
    return {"max_abs": max(e["max_abs"] for e in errors), "max_rel": max(e["max_rel"] for e in errors),
            "cosine": min(e["cosine"] for e in errors)}


def _errors(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    a = torch.as_tensor(actual).detach().to("cpu", torch.float64).flatten()
    e = torch.as_tensor(expected).detach().to("cpu", torch.float64).flatten()
    diff = (a - e).abs().max().item()
    return {
        "max_abs": diff,
        "max_rel": diff / max(e.abs().max().item(), 1e-30),
        "cosine": torch.nn.functional.cosine_similarity(a, e, dim=0).item(),
    }


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Write and fsync `data`; a failure (full disk, read-only folder) is WriteFailed with the system's reason."""
    with writing(), open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def write_serialized(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Serialize into memory first: torch's native writers abort the process when a write fails (e.g. a full disk)."""
    buffer = io.BytesIO()
    save(buffer)
    write_file(path, buffer.getvalue())


def write_sidecar(path: Path, metadata: dict[str, Any]) -> str:
    """Write `metadata` as `<artifact>.json` beside the artifact; returns its file name."""
    sidecar = path.with_name(f"{path.name}.json")
    lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in metadata.items())
    write_file(sidecar, f"{{\n{lines}\n}}\n".encode())  # one key a line, each value on its line
    return sidecar.name
