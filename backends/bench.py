"""Latency and throughput of a model's deployment routes, timed the same way side by side."""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from resdsl import quantization
from resdsl.backends import BACKENDS, BackendUnavailable, BatchProfile, Unsupported, load_backend
from resdsl.backends.artifact import DTYPES, cast
from resdsl.backends.reparam import reparameterize

Runner = Callable[[torch.Tensor], torch.Tensor]

ROUTES = {
    "eager": "torch eager",
    "folded": "torch eager, BN folded",
    "compile": "torch.compile (BN folded)",
    "export": "torch.export program",
    "onnx": "onnxruntime",
    "openvino": "OpenVINO",
    "openvino-int8": "OpenVINO INT8 (NNCF)",
    "tensorrt": "TensorRT engine",
}


@dataclass
class Timing:
    """One route's result: latencies in milliseconds, throughput in images per second, or why it could not run."""

    route: str
    batch: int
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    throughput: float = float("nan")
    error: str = ""


def runner(route: str, model: torch.nn.Module, example: torch.Tensor, precision: str, device: str,
           workdir: Path, calibration: list[torch.Tensor] | None = None) -> Runner:
    """A callable for one route; artifact routes build their artifact in `workdir` first, the INT8 one then
    quantised on the `calibration` batches."""
    if route == "eager":
        return cast(copy.deepcopy(model), example, precision)[0].to(device)
    folded = reparameterize(model)
    if route == "folded":
        return cast(folded, example, precision)[0].to(device)
    if route == "compile":
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on CPU hosts
        return torch.compile(cast(folded, example, precision)[0].to(device))
    name = route.removesuffix("-int8")
    if precision not in BACKENDS[name].precisions:
        raise Unsupported(f"the {name} backend builds {' or '.join(BACKENDS[name].precisions)}, not {precision}")
    backend = load_backend(name)
    if hasattr(backend, "require"):
        backend.require()
    if route == "openvino-int8":
        quantization.require()
    batch = BatchProfile(example.shape[0], example.shape[0], example.shape[0])
    with torch.no_grad():
        expected = model(example)
    out = workdir / f"model{BACKENDS[name].suffix}"
    deployed, example = cast(folded, example, precision)
    backend.build(deployed, example, out, batch=batch, expected=expected, metadata={})
    if route == "openvino-int8":
        assert calibration is not None  # resdsl.benchmark asks for --calibration with this route
        quantized = workdir / f"model-int8{BACKENDS[name].suffix}"
        quantization.quantize(out, quantized, calibration)
        out = quantized
    return backend.load(out, device)


def measure(run: Runner, example: torch.Tensor, *, runs: int, warmup: int, device: str) -> tuple[float, float, float]:
    """p50 and p90 latency (ms) and throughput (images/s) of `runs` timed calls after `warmup` untimed ones."""
    sync = _synchronizer(device)
    with torch.inference_mode():
        for _ in range(warmup):
            run(example)
        sync()
        times = [_timed(run, example, sync) for _ in range(runs)]
    return _summary(times, example.shape[0])


def bench(routes: list[str], model: torch.nn.Module, example: torch.Tensor, *, precision: str, device: str,
          runs: int, warmup: int, workdir: Path, calibration: list[torch.Tensor] | None = None,
          required: int = 0) -> list[Timing]:
    """Build and warm up each route, then time them interleaved: each of `runs` rounds calls every route once, so
    that a change in the machine's load falls on all routes alike. A route that fails gets its reason instead; if
    one of the first `required` routes fails to build, none is timed (the others were only there to compare)."""
    timings = [Timing(ROUTES[route], example.shape[0]) for route in routes]
    x = example.to(device, DTYPES[precision])
    sync = _synchronizer(device)
    runners: dict[int, Runner] = {}
    for index, route in enumerate(routes):
        with _failure(timings[index]):
            # not in inference mode: exports
            run = runner(route, model, example, precision, device, workdir, calibration)
            with torch.inference_mode():
                for _ in range(warmup):
                    run(x)
            sync()
            runners[index] = run
        if timings[index].error and index < required:
            return timings
    with torch.inference_mode():
        samples: dict[int, list[float]] = {index: [] for index in runners}
        for _ in range(runs):
            for index, run in list(runners.items()):
                with _failure(timings[index]):
                    samples[index].append(_timed(run, x, sync))
                if timings[index].error:
                    del runners[index]
    for index, times in samples.items():
        if not timings[index].error:
            timings[index].p50_ms, timings[index].p90_ms, timings[index].throughput = _summary(times, x.shape[0])
    return timings


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _timed(run: Runner, x: torch.Tensor, sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    run(x)
    sync()
    return time.perf_counter() - start


def _summary(times: list[float], batch: int) -> tuple[float, float, float]:
    """p50 and p90 (ms) and images/s of the call times (seconds)."""
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return statistics.median(times) * 1e3, deciles[8] * 1e3, batch * len(times) / sum(times)


@contextmanager
def _failure(timing: Timing) -> Iterator[None]:
    """Record why a route cannot run (a missing package, an unsupported precision, an error) in its timing."""
    try:
        yield
    except (BackendUnavailable, Unsupported) as error:
        timing.error = str(error)
    except Exception as error:
        text = str(error).strip()
        timing.error = f"failed: {text.splitlines()[0] if text else type(error).__name__}"
