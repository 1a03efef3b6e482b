"""Deployment backends of `resdsl build` and `resdsl bench`, registered by name and imported on use.

A backend is one module with `build(model, example, out, *, batch, expected, metadata) -> BuildReport`
and `load(path, device) -> callable`; adding one is a new file here plus one line in `BACKENDS`. The model it
gets is final (cast to the precision, input normalisation prepended); it may return a tensor, a tuple or a dict.
This package must not import torch at import time (`resdsl check` loads no torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType

from resdsl.files import reason

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INPUT_FORMATS = ("float", "uint8")  # what an artifact takes: see resdsl.backends.preprocess


@dataclass(frozen=True)
class Backend:
    """Where a backend lives, its file suffix, whether it folds BN (inference artifacts), and its precisions."""

    module: str
    suffix: str
    fold: bool
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")


BACKENDS: dict[str, Backend] = {
    "pytorch": Backend("resdsl.backends.export", ".pt2", False),
    "export": Backend("resdsl.backends.export", ".pt2", True),
    # ONNX Conv takes no bfloat16 at the exporter's default opset (20)
    "onnx": Backend("resdsl.backends.onnx", ".onnx", True, ("fp32", "fp16")),
    "torchscript": Backend("resdsl.backends.torchscript", ".ts", True),
    "tensorrt": Backend("resdsl.backends.tensorrt", ".engine", True),
    "openvino": Backend("resdsl.backends.openvino", ".xml", True, ("fp32",)),
}


class BackendUnavailable(Exception):
    """What the backend needs is missing here (a GPU, a package); the message says how to get it."""


class Unsupported(Exception):
    """The backend cannot do what was asked (e.g. a precision); the message says why."""


class WriteFailed(Exception):
    """Writing an artifact's file failed (a full disk, a read-only folder); the message is the system's reason."""


@contextmanager
def writing() -> Iterator[None]:
    """Turn an OSError in the body into WriteFailed with the system's reason."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(reason(error)) from None


@dataclass(frozen=True)
class BatchProfile:
    """A fixed batch (`min == opt == max`) or a dynamic range with the size to optimise for."""

    min: int
    opt: int
    max: int

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    @property
    def example(self) -> int:
        """The batch to trace with: dynamic export specialises a batch of 1, so at least 2."""
        return min(max(self.opt, 2), self.max) if self.dynamic else self.opt

    def __str__(self) -> str:
        return f"batch {self.min}:{self.opt}:{self.max}" if self.dynamic else f"batch {self.opt}"


@dataclass
class BuildReport:
    """What a build wrote (file names, main artifact first) and its output's error against PyTorch's."""

    files: list[str]
    batch: BatchProfile
    errors: dict[str, float] = field(default_factory=dict)
    checked_with: str = ""
    path: str = ""
    size: int = 0


def load_backend(name: str) -> ModuleType:
    """The module of a registered backend (imports torch and the backend's own packages)."""
    return importlib.import_module(BACKENDS[name].module)
