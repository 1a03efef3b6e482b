"""OpenVINO IR (`.xml` + `.bin`) converted from the torch.export program, checked in OpenVINO's CPU runtime."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from resdsl.backends import BackendUnavailable, BatchProfile, BuildReport, Unsupported, openvino_ir
from resdsl.backends.artifact import output_errors, output_names, write_sidecar
from resdsl.backends.export import exported_program
from resdsl.backends.onnx import INPUT

# OpenVINO's CPU plugin may run fp32 models in bf16 on CPUs with AMX or AVX512-BF16; the artifact is fp32 and is
# checked as such, so every load asks for f32 arithmetic. Its threads are not pinned to cores: on a CPU shared with
# other work a pinned thread waits for its core while others sit idle (docs/benchmarks.md: cifar56 at batch 1, one
# thread, load average 16: 92 -> 57 ms).
RUNTIME = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": "NO"}


def require() -> None:
    """BackendUnavailable, saying how to install it, when openvino does not import here."""
    try:
        _openvino()
    except ImportError:
        raise BackendUnavailable("the openvino backend needs openvino, which does not import here: "
                                 "pip install 'resdsl[openvino]'") from None


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, batch: BatchProfile, expected: Any,
          metadata: dict[str, Any]) -> BuildReport:
    """Export, convert with fixed C x H x W (and the batch range), save uncompressed, load back and compare."""
    openvino = _openvino()
    if out.suffix != ".xml":  # OpenVINO's serializer takes no other name
        raise Unsupported(f"an OpenVINO IR file ends in .xml (its weights go beside it in .bin); give -o "
                          f"{out.with_suffix('.xml').name}, not {out.name}")
    with _no_telemetry():
        ir = openvino.convert_model(exported_program(model, example, batch))
    dimension = openvino.Dimension(batch.min, batch.max) if batch.dynamic else openvino.Dimension(batch.opt)
    ir.reshape({ir.inputs[0]: openvino.PartialShape([dimension, *(openvino.Dimension(d) for d in example.shape[1:])])})
    ir.inputs[0].get_tensor().set_names({INPUT})
    for output, name in zip(ir.outputs, output_names(expected), strict=True):
        output.get_tensor().set_names({name})
    openvino_ir.save(openvino, ir, out)
    weights = out.with_suffix(".bin").name
    actual = load(out, "cpu")(example)
    return BuildReport(files=[out.name, weights, write_sidecar(out, metadata)], batch=batch,
                       errors=output_errors(actual, expected), checked_with="openvino (CPU)")


def _openvino() -> ModuleType:
    """openvino, imported without the usage report its import sends (`openvino.tools.ovc` forks a copy of the
    process that posts an "ov import" event unless the user opted out). Where `openvino_telemetry` does not import,
    OpenVINO binds its own stub instead, so it is hidden while openvino imports; once imported, openvino keeps the
    stub and the user's own `import openvino_telemetry` works again."""
    if "openvino" not in sys.modules:
        installed = sys.modules.get("openvino_telemetry")
        sys.modules["openvino_telemetry"] = None  # pyright: ignore[reportArgumentType] (None: "cannot import")
        try:
            import openvino.tools.ovc  # what openvino's own __init__ imports, and what reports
        finally:
            if installed is None:
                del sys.modules["openvino_telemetry"]
            else:
                sys.modules["openvino_telemetry"] = installed
    import openvino

    return openvino


@contextlib.contextmanager
def _no_telemetry() -> Iterator[None]:
    """`convert_model` without its usage report: unless the user opted out, OpenVINO's converter sends one over the
    network from a forked copy of this process (killed after 3 s without a network). resdsl makes no network calls,
    so the conversion uses the stub OpenVINO itself falls back to when `openvino_telemetry` is not installed."""
    from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils

    modules = (convert_impl, telemetry_utils)
    reporters = [module.tm for module in modules]
    for module in modules:
        setattr(module, "tm", telemetry_stub)  # noqa: B010 (typed module attribute; the stub has the same API)
    try:
        yield
    finally:
        for module, reporter in zip(modules, reporters, strict=True):
            setattr(module, "tm", reporter)  # noqa: B010


@functools.cache
def core() -> Any:
    """The process's one OpenVINO runtime, `openvino.Core`, as OpenVINO asks: with a Core per model, a process
    that had two compiled models and freed them, then forked (DataLoader workers) and ran a subprocess, died by
    SIGSEGV (OpenVINO 2026.4; tests/test_openvino.py reproduces it)."""
    return _openvino().Core()


def load(path: Path, device: str) -> Callable[[torch.Tensor], Any]:
    """A compiled OpenVINO model as a function of a tensor: one output as a tensor, several as a tuple.

    Runs on the CPU plugin with torch's thread count (`bench --threads`), for fair comparisons.
    """

    config = {**RUNTIME, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = core().compile_model(str(path), "CPU", config)

    def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        results = compiled(x.detach().cpu().numpy())
        tensors = tuple(torch.from_numpy(np.asarray(results[output])) for output in compiled.outputs)
        return tensors[0] if len(tensors) == 1 else tensors

    return run
