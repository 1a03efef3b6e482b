"""ONNX through torch.onnx's dynamo exporter: one self-contained file below 2 GB, checked and run in onnxruntime."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from resdsl.backends import BatchProfile, BuildReport, Unsupported
from resdsl.backends.artifact import cast, output_errors

INPUT, OUTPUT = "input", "output"
PROTOBUF_LIMIT = 2**31 - 2**26  # 2 GiB less headroom for the graph itself
STANDARD_DOMAINS = ("", "ai.onnx")


def export(model: torch.nn.Module, example: torch.Tensor, out: Path, batch: BatchProfile) -> list[str]:
    """Write `out` (and `out.data` when the weights pass 2 GB); returns the file names written."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    external = weights > PROTOBUF_LIMIT
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(out), dynamo=True, external_data=external, verbose=False,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=dynamic)
    if not external:
        return [out.name]
    return [out.name, *(p.name for p in out.parent.iterdir() if p.name != out.name)]


def nonstandard_ops(path: Path) -> list[str]:
    """`domain::op` for every node outside the standard ai.onnx domain (custom ops other runtimes lack)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, precision: str, batch: BatchProfile,
          expected: torch.Tensor) -> BuildReport:
    """Export, validate with onnx.checker, refuse non-standard ops, and compare in onnxruntime when installed."""
    import onnx

    model, example = cast(model, example, precision)
    files = export(model, example, out, batch)
    onnx.checker.check_model(str(out), full_check=True)
    custom = nonstandard_ops(out)
    if custom:
        raise Unsupported(f"the ONNX graph has non-standard ops ({', '.join(custom)}) that other runtimes lack")
    report = BuildReport(files=files, precision=precision, batch=batch, checked_with="onnx.checker")
    with contextlib.suppress(ImportError):
        actual = load(out, "cpu")(example)
        report.errors, report.checked_with = output_errors(actual, expected), "onnx.checker, onnxruntime"
    return report


def load(path: Path, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """An onnxruntime session as a tensor -> tensor function (CUDA provider on a GPU when available)."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU budget as torch, for fair comparisons
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run([OUTPUT], {INPUT: x.detach().cpu().numpy()})[0]))

    return run
