"""Weights from a file into a model: resdsl checkpoints and bare state_dicts (torchvision, timm), by name.

Files are read with `torch.load(weights_only=True)`: tensors and plain containers only, never code.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile
CONTAINERS = ("model", "state_dict")  # where checkpoints keep the state_dict: resdsl's, and timm's/Lightning's
SHOWN = 3  # keys named in a message before "and N more"
OPTIONAL = ".num_batches_tracked"  # BatchNorm's step counter: timm and old torchvision weights leave it out


class WeightsError(Exception):
    """Weights that cannot be read or do not fit; the message is one sentence for the user.

    `head_only` says the only misfit is the last layer's shape (a head for another number of classes).
    """

    def __init__(self, message: str, head_only: bool = False) -> None:
        super().__init__(message)
        self.head_only = head_only


class StatisticError(WeightsError):
    """A recorded mean or std that cannot be applied (NaN, zero, not a tensor...)."""


@dataclass(frozen=True)
class Weights:
    """A state_dict read from `path` (prefixes stripped) and the other entries of its checkpoint, if any."""

    path: Path
    state: dict[str, torch.Tensor]
    checkpoint: dict[str, Any] = field(default_factory=dict)


INPUT_FORMATS = ("uint8",)  # the images resdsl trains on: uint8 0-255, divided by 255


@dataclass(frozen=True)
class Preprocessing:
    """The input pipeline a checkpoint's weights were trained with, the one record of it that `train` writes and
    `eval` and `build` read: `input_format` images (uint8, 0-255) cropped to `input` (CxHxW; None: the spec's), then
    `(images / 255 - mean) / std`, each C or CxHxW in 0-1 units (None: not applied)."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    input: tuple[int, int, int] | None = None
    input_format: str = "uint8"

    def fields(self) -> dict[str, Any]:
        """The record as a checkpoint keeps it."""
        return {"mean": self.mean, "std": self.std, "input": None if self.input is None else list(self.input),
                "input_format": self.input_format}


def preprocessing(weights: Weights, *, statistics: bool = True) -> Preprocessing:
    """What `weights`' checkpoint records of its preprocessing, the mean and std checked in float32 as they will be
    applied (not read without `statistics`: the caller gives its own); WeightsError naming the field that is not
    usable."""
    recorded = {key: weights.checkpoint.get(key) for key in ("mean", "std") if statistics}
    for key, value in recorded.items():
        if value is not None and (problem := statistic_problem(value, key)) is not None:
            raise StatisticError(f"{weights.path} records a {key} that is {problem}")
    shape = weights.checkpoint.get("input")
    if shape is not None and not (isinstance(shape, list | tuple) and len(shape) == 3
                                  and all(type(d) is int and d > 0 for d in shape)):
        raise WeightsError(f"{weights.path} records an input that is {_shown(shape)}, not CxHxW (three positive "
                           "whole numbers)")
    input_format = weights.checkpoint.get("input_format", "uint8")
    if input_format not in INPUT_FORMATS:
        raise WeightsError(f"{weights.path} records an input_format {_shown(input_format)}, and resdsl trains on "
                           "uint8 images only (0-255, divided by 255)")
    return Preprocessing(**recorded, input=None if shape is None else tuple(shape), input_format=input_format)


def _shown(value: object) -> str:
    """A recorded value for a message: short, one line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def statistic_problem(value: object, name: str) -> str | None:
    """Why `value` cannot be the input normalisation's `name` ("mean" or "std"), in float32 as it is applied; or
    None. Refused: a value that is not a C or CxHxW float tensor, NaN, infinite, denormal, and a std of zero or
    less (a float64 value can become any of these in float32)."""
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}, not a C or CxHxW tensor"
    if not value.is_floating_point() or value.dim() not in (1, 3) or not value.numel():
        kind = "floating-point" if value.is_floating_point() else str(value.dtype).removeprefix("torch.")
        return f"a {shape_text(value)} {kind} tensor, not a C or CxHxW floating-point one"
    as_used = value.detach().to(torch.float32)
    if not bool(torch.isfinite(as_used).all()):
        return "NaN or infinite in float32"
    if bool(((as_used != 0) & (as_used.abs() < torch.finfo(torch.float32).tiny)).any()):
        return "denormal in float32 (non-zero but under 1.2e-38)"
    if name == "std" and not bool((as_used > 0).all()):
        return "zero or negative in float32 (a std must be positive)"
    return None


def read_torch_file(path: Path, what: str = "weights file") -> Any:
    """What `torch.save` wrote to `path`, loaded on the CPU without running code; WeightsError if it cannot be."""
    if path.is_dir():
        hint = f" (did you mean {path / 'last.pt'}?)" if (path / "last.pt").is_file() else ""
        raise WeightsError(f"{path} is a directory, not a {what}{hint}")
    if not path.exists():
        raise WeightsError(f"{path}: no such {what}")
    if not path.is_file():
        raise WeightsError(f"{path} is not a regular file (a pipe or a device); give a file saved with torch.save")
    try:
        file = path.open("rb")
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error.strerror or error}") from None
    with file:
        head = file.read(2)
        if not head:
            raise WeightsError(f"{path} is empty")
        file.seek(0)
        try:
            with warnings.catch_warnings():  # e.g. a note on the pickle protocol of a file torch then refuses
                warnings.simplefilter("ignore")
                return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types (OSError among them) for damaged archives
            raise WeightsError(_unreadable(path, head, error)) from None


def read_tensor_file(path: Path, what: str) -> torch.Tensor:
    """The one tensor `torch.save` wrote to `path` (e.g. a run's mean image); WeightsError if it cannot be."""
    value = read_torch_file(path, what)
    if not isinstance(value, torch.Tensor):
        raise WeightsError(f"{path} holds no {what} (a tensor) but a {type(value).__name__}")
    return value


def _unreadable(path: Path, head: bytes, error: Exception) -> str:
    """What a file that torch.load refused is not. Never advises weights_only=False: the file's origin is unknown."""
    tensors_only = "resdsl loads tensors only, so save the weights with torch.save(model.state_dict(), path)"
    refused = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if refused:
        return (f"{path} is not a plain state_dict: it holds the Python object {refused.group(1)}, which resdsl "
                f"does not unpickle (nothing in the file was run); {tensors_only}")
    if head == b"PK":
        return f"{path} is a torch.save archive that is truncated or damaged"
    if head[:1] == b"\x80":
        return f"{path} is a plain Python pickle, not a file saved with torch.save; {tensors_only}"
    return f"{path} is not a PyTorch weights file (neither a torch.save archive nor a pickle)"


def read_weights(path: Path) -> Weights:
    """The state_dict in `path`: bare, or under 'model' (resdsl) or 'state_dict' (timm, Lightning)."""
    loaded = read_torch_file(path)
    state, checkpoint = loaded, {}
    if isinstance(loaded, dict):
        for key in CONTAINERS:
            if isinstance(loaded.get(key), dict):
                state, checkpoint = loaded[key], {k: v for k, v in loaded.items() if k != key}
                break
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise WeightsError(f"{path} holds neither a state_dict (names to tensors) nor a checkpoint with one "
                           "under 'model' or 'state_dict'")
    for key, tensor in state.items():
        if (kind := _unloadable(tensor)) is not None:
            raise WeightsError(f"{path} holds {kind} tensor {key}, and resdsl loads only dense real-valued tensors "
                               "with their values; save the weights with torch.save(model.state_dict(), path)")
    return Weights(path, strip_prefixes(state), checkpoint)


def _unloadable(tensor: torch.Tensor) -> str | None:
    """What kind of tensor `tensor` is if it cannot be copied into a layer as it is (None if it can)."""
    if tensor.is_meta:
        return "a meta (shape-only, valueless)"
    if tensor.layout != torch.strided:
        return "a sparse"
    if tensor.is_quantized:
        return "a quantized"
    if tensor.is_complex():
        return "a complex"  # copying it into a real layer would silently drop the imaginary part
    return None


def non_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating-point `tensor` holds a NaN or an infinity."""
    return tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` without the prefixes DistributedDataParallel and torch.compile put on every name, in whichever order
    they wrap each other (`torch.compile(DDP(model))` names `_orig_mod.module.conv1.weight`)."""
    while state and (prefix := next((p for p in PREFIXES if all(key.startswith(p) for key in state)), None)):
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def load_weights(model: nn.Module, weights: Weights, name: str, *, new_head: bool = False) -> list[str]:
    """Copy `weights` into `model` (a network called `name`); WeightsError, naming every misfit, if they differ.

    With `new_head`, a last layer of another shape (a head for another number of classes) keeps
    the model's own initialisation. Returns the names left at their initialisation.
    """
    own = model.state_dict()
    given = weights.state
    missing = [key for key in own if key not in given and not key.endswith(OPTIONAL)]
    unexpected = [key for key in given if key not in own]
    wrong = [key for key in own if key in given and own[key].shape != given[key].shape]
    head_only = bool(wrong) and not missing and not unexpected and set(wrong) <= head_keys(model)
    if nan := [key for key in own if key in given and key not in wrong and non_finite(given[key])]:
        raise WeightsError(f"{weights.path} holds NaN or infinite values in {_listing(nan)}: the weights of a run "
                           "that diverged, which give no meaningful output")
    if head_only and new_head:
        model.load_state_dict({**given, **{key: own[key] for key in wrong}})
        return wrong
    if missing or unexpected or wrong:
        raise WeightsError(f"{weights.path} does not fit {name}: "
                           + _misfits(missing, unexpected, wrong, own, given), head_only=head_only)
    try:  # a plain dict carries no version metadata, so BatchNorm fills a missing step counter itself
        model.load_state_dict(dict(given))
    except RuntimeError as error:
        raise WeightsError(f"{weights.path} does not load into {name}: {load_failure(error)}") from None
    return []


def load_failure(error: Exception) -> str:
    """The reasons of a load_state_dict error on one line (its first line only says that loading failed)."""
    lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
    reasons = lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict") else lines
    return "; ".join(reasons) or type(error).__name__


def head_keys(model: nn.Module) -> set[str]:
    """The state_dict names of the last module (in registration order) that holds parameters itself."""
    owners = [(prefix, module) for prefix, module in model.named_modules()
              if next(module.parameters(recurse=False), None) is not None]
    if not owners:
        return set()
    prefix, module = owners[-1]
    names = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
    return {f"{prefix}.{n}" if prefix else n for n in names}


def shape_text(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def _misfits(missing: list[str], unexpected: list[str], wrong: list[str],
             own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """One clause per kind of misfit, each naming its first keys."""
    if not set(own) & set(given):
        return (f"no name in common (the file has names like '{next(iter(given))}', the network "
                f"like '{next(iter(own))}')")
    wrong_shapes = [f"{key} ({shape_text(given[key])} in the file, {shape_text(own[key])} here)" for key in wrong]
    clauses = [f"{label} {_listing(keys)}" for label, keys in (
        ("missing", missing), ("unexpected", unexpected), ("wrong shape for", wrong_shapes)) if keys]
    return "; ".join(clauses)


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more
