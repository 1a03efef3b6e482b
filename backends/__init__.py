"""Deployment backends of `resdsl build` and `resdsl bench`, registered by name and imported on use.

A backend is one module with `build(model, example, out, *, batch, expected, metadata) -> BuildReport`
and `load(path, device) -> callable`; adding one is a new file here plus its `Backend` record in `BACKENDS`.
The model it gets is final (cast to the precision, input normalisation prepended); it may return a tensor, a tuple
or a dict.
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
class Tolerance:
    """How far an artifact's output may be from the unfolded fp32 PyTorch model's on the build's check batch: the
    max absolute error relative to the largest |output|, and the least cosine similarity (docs/deploy.md)."""

    max_rel: float
    cosine: float

    def exceeded(self, errors: dict[str, float], precision: str) -> str | None:
        """Which check `errors` (see resdsl.backends.artifact.output_errors) fail, with the figures, or None."""
        failed = []
        if not errors["max_rel"] <= self.max_rel:  # NaN fails too
            failed.append(f"max rel err {errors['max_rel']:.2e} is over the {precision} tolerance {self.max_rel:.0e}")
        if not errors["cosine"] >= self.cosine:
            failed.append(f"cosine {errors['cosine']:.6f} is under the {precision} minimum {self.cosine}")
        return " and ".join(failed) or None


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 0.99999),
    "fp16": Tolerance(2e-2, 0.999),
    "bf16": Tolerance(1e-1, 0.99),
}


@dataclass(frozen=True)
class Backend:
    """One deployment backend, registered once: everything the CLI, the library, the install messages and the tests
    know about it.

    `module` builds and loads it; `suffixes` are the files it writes beside each other (the main artifact first);
    `fold` says BN is folded (inference artifacts); `extra` is the pip extra that installs `modules`, the packages it
    imports beyond torch (import name, package name); `verify` holds the tolerances that differ from TOLERANCES.
    """

    name: str
    module: str
    suffixes: tuple[str, ...]
    fold: bool = True
    precisions: tuple[str, ...] = ("fp32", "fp16", "bf16")
    extra: str = "torch"
    modules: tuple[tuple[str, str], ...] = ()
    verify: tuple[tuple[str, Tolerance], ...] = ()

    @property
    def suffix(self) -> str:
        """The main artifact's suffix: `.onnx`."""
        return self.suffixes[0]

    def tolerance(self, precision: str) -> Tolerance:
        """How close to PyTorch's this backend's output must be at `precision` to pass the build's verification."""
        return dict(self.verify).get(precision, TOLERANCES[precision])


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("pytorch", "resdsl.backends.export", (".pt2", ".pt2.json"), fold=False),
    Backend("export", "resdsl.backends.export", (".pt2", ".pt2.json")),
    # ONNX Conv takes no bfloat16 at the exporter's default opset (20); weights over 2 GB go to .onnx.data
    Backend("onnx", "resdsl.backends.onnx", (".onnx", ".onnx.data"), precisions=("fp32", "fp16"), extra="onnx",
            modules=(("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime"))),
    Backend("torchscript", "resdsl.backends.torchscript", (".ts", ".ts.json")),
    Backend("tensorrt", "resdsl.backends.tensorrt", (".engine", ".engine.json"), extra="tensorrt",
            modules=(("torch_tensorrt", "torch-tensorrt"), ("tensorrt", "TensorRT")),
            verify=(("fp32", Tolerance(1e-2, 0.9999)),)),  # TensorRT computes fp32 convolutions in TF32
    Backend("openvino", "resdsl.backends.openvino", (".xml", ".bin", ".xml.json"), precisions=("fp32",),
            extra="openvino", modules=(("openvino", "openvino"),)),
)}


def tolerance(backend: str, precision: str) -> Tolerance:
    return BACKENDS[backend].tolerance(precision)


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
    """What a build wrote (file names, main artifact first), its output's error against PyTorch's, and whether
    PyTorch's output (the reference) was finite."""

    files: list[str]
    batch: BatchProfile
    errors: dict[str, float] = field(default_factory=dict)
    reference_finite: bool = True
    checked_with: str = ""
    path: str = ""
    size: int = 0


def load_backend(name: str) -> ModuleType:
    """The module of a registered backend (imports torch and the backend's own packages)."""
    return importlib.import_module(BACKENDS[name].module)
