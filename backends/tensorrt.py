"""A serialized TensorRT engine through torch-tensorrt, built strongly typed and checked on the GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from resdsl.backends import BackendUnavailable, BatchProfile, BuildReport
from resdsl.backends.artifact import output_errors, write_file, write_sidecar
from resdsl.backends.export import exported_program

INSTALL = "pip install 'resdsl[tensorrt]'"


def require() -> tuple[ModuleType, ModuleType]:
    """torch_tensorrt and tensorrt, or BackendUnavailable saying what is missing and how to get it."""
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "the tensorrt backend needs an NVIDIA GPU with its driver and none is visible here; "
            f"run `{INSTALL}` and build on such a machine, or use --backend onnx with trtexec (docs/deploy.md)")
    try:  # without a driver or TensorRT this raises RuntimeError, AssertionError or a bare Exception
        import tensorrt
        import torch_tensorrt  # pyright: ignore[reportMissingImports]  (the [tensorrt] extra: CI has no NVIDIA GPU)
    except Exception as error:
        raise BackendUnavailable(f"the tensorrt backend needs torch-tensorrt and TensorRT, which do not import here "
                                 f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                                 f"install them with `{INSTALL}`") from None
    return torch_tensorrt, tensorrt


def build(model: torch.nn.Module, example: torch.Tensor, out: Path, *, batch: BatchProfile, expected: Any,
          metadata: dict[str, Any]) -> BuildReport:
    """Export, convert the whole graph to one engine for the batch profile, save it, run it and compare."""
    torch_tensorrt, _ = require()
    model, example = model.cuda(), example.cuda()
    program = exported_program(model, example, batch)
    shape = tuple(example.shape[1:])
    spec = torch_tensorrt.Input(min_shape=(batch.min, *shape), opt_shape=(batch.opt, *shape),
                                max_shape=(batch.max, *shape), dtype=example.dtype)
    engine = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(
        program, arg_inputs=[spec], truncate_double=True)
    write_file(out, bytes(engine))
    actual = Engine(out)(example)
    return BuildReport(files=[out.name, write_sidecar(out, metadata)], batch=batch,
                       errors=output_errors(actual, expected), checked_with="TensorRT runtime")


class Engine:
    """A deserialized engine with one input, called like a module on CUDA tensors (a tuple for several outputs)."""

    def __init__(self, path: Path) -> None:
        _, trt = require()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{path} was built for another TensorRT version or GPU; rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                       trt.uint8: torch.uint8}
        self.input_dtype = self.dtypes[self.engine.get_tensor_dtype(self.input)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = x.to("cuda", self.input_dtype).contiguous()
        self.context.set_input_shape(self.input, tuple(x.shape))
        self.context.set_tensor_address(self.input, x.data_ptr())
        results = []
        for name in self.outputs:
            y = torch.empty(tuple(self.context.get_tensor_shape(name)),
                            dtype=self.dtypes[self.engine.get_tensor_dtype(name)], device="cuda")
            self.context.set_tensor_address(name, y.data_ptr())
            results.append(y)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        stream.synchronize()
        return results[0] if len(results) == 1 else tuple(results)


def load(path: Path, device: str) -> Callable[[torch.Tensor], Any]:
    return Engine(path)
