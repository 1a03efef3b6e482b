"""ONNX through torch.onnx's dynamo exporter: one self-contained file below 2 GB, checked and run in onnxruntime."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resdsl.backends import BatchProfile, BuildReport, Unsupported, writing
from resdsl.backends.artifact import output_errors, output_names, write_file

INPUT = "input"
PROTOBUF_LIMIT = 2**31 - 2**26  # 2 GiB less headroom for the graph itself
STANDARD_DOMAINS = ("", "ai.onnx")
# Waiting threads sleep instead of spinning: on a CPU shared with other work, spinning takes the time the work
# needs (docs/benchmarks.md: cifar56 at batch 1, one thread, load average 16: 78 -> 59 ms); outputs are unchanged.
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


def export(model: torch.nn.Module, example: torch.Tensor, out: Path, batch: BatchProfile, outputs: list[str],
           metadata: dict[str, Any]) -> list[str]:
    """Write `out` (and `out.data` when the weights pass 2 GB) with `metadata` as metadata_props; returns the files.

    One file is serialized in memory and written by Python, so a full disk is an error, not a half-written file.
    """
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    external = weights > PROTOBUF_LIMIT
    dynamic = ({0: torch.export.Dim("batch", min=batch.min, max=batch.max)},) if batch.dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=[INPUT],
                                    output_names=outputs, dynamic_shapes=dynamic)
    assert program is not None  # None only from the TorchScript exporter (dynamo=False)
    for key, value in metadata.items():
        program.model.metadata_props[key] = value if isinstance(value, str) else json.dumps(value)
    if not external:
        write_file(out, program.model_proto.SerializeToString())
        return [out.name]
    with writing():
        program.save(str(out), external_data=True)
    return [out.name, *(p.name for p in out.parent.iterdir() if p.name != out.name)]


def nonstandard_ops(path: Path) -> list[str]:
    """`domain::op` for every node outside the standard ai.onnx domain (custom ops other runtimes lack)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, batch: BatchProfile, expected: Any,
          metadata: dict[str, Any]) -> BuildReport:
    """Export, validate with onnx.checker, refuse non-standard ops, and compare in onnxruntime when installed."""
    import onnx

    files = export(model, example, out, batch, output_names(expected), metadata)
    onnx.checker.check_model(str(out), full_check=True)
    custom = nonstandard_ops(out)
    if custom:
        raise Unsupported(f"the ONNX graph has non-standard ops ({', '.join(custom)}) that other runtimes lack")
    report = BuildReport(files=files, batch=batch, checked_with="onnx.checker")
    with contextlib.suppress(ImportError):
        actual = load(out, "cpu")(example)
        report.errors, report.checked_with = output_errors(actual, expected), "onnx.checker, onnxruntime"
    return report


def load(path: Path, device: str) -> Callable[[torch.Tensor], Any]:
    """An onnxruntime session as a function of a tensor: one output as a tensor, several as a tuple.

    Uses the CUDA provider on a GPU when available, and torch's thread count (`bench --threads`) for intra-op threads.
    """
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()  # the same CPU budget as torch, for fair comparisons
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feed = {input_name: x.detach().cpu().numpy()}
        results = tuple(torch.from_numpy(np.asarray(r)) for r in session.run(None, feed))
        return results[0] if len(results) == 1 else results

    return run
