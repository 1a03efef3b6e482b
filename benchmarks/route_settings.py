"""Runtime settings of the CPU routes, timed side by side: do any beat the backends' settings?

Each route of `resdsl bench` as resdsl loads it, and with the settings a user would try next: onnxruntime and
OpenVINO with their own defaults (intra-op spinning, threads pinned to cores), OpenVINO's THROUGHPUT hint (LATENCY
is its default), and torch.compile with inductor's freezing (weights as constants, prepacked for oneDNN). All are
built from one seeded module, checked against its output (max relative error printed), warmed up, then timed
interleaved: each round calls every variant once. The ratio is eager's median over the variant's.

    python benchmarks/route_settings.py                                   # resnet50, batch 1, one thread
    python benchmarks/route_settings.py --spec specs/cifar56.res --batch 32 --runs 20
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import resdsl
from resdsl.backends import openvino as openvino_backend
from resdsl.backends.bench import Runner, runner
from resdsl.backends.reparam import reparameterize


def onnxruntime_session(path: Path, entries: dict[str, str]) -> Runner:
    """An onnxruntime CPU session of the file with torch's thread count and these session config entries."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def openvino_model(path: Path, config: dict[str, str]) -> Runner:
    """An OpenVINO CPU model of the IR with the backend's runtime settings, torch's thread count, and `config`."""
    settings = {**openvino_backend.RUNTIME, "INFERENCE_NUM_THREADS": torch.get_num_threads(), **config}
    compiled = openvino_backend.core().compile_model(str(path), "CPU", settings)
    return lambda x: torch.from_numpy(np.asarray(compiled(x.numpy())[compiled.outputs[0]]))


def variants(model: torch.nn.Module, example: torch.Tensor, workdir: Path, compiled: bool) -> dict[str, Runner]:
    """The routes as resdsl loads them and the settings tried beside them."""
    routes: dict[str, Runner] = {"torch eager": runner("eager", model, example, "fp32", "cpu", workdir)}
    for route in ("onnx", "openvino"):
        (workdir / route).mkdir()
        routes[f"{route} (resdsl's settings)"] = runner(route, model, example, "fp32", "cpu", workdir / route)
    onnx_file, openvino_file = workdir / "onnx" / "model.onnx", workdir / "openvino" / "model.xml"
    routes["onnxruntime, intra-op spinning (its default)"] = onnxruntime_session(
        onnx_file, {"session.intra_op.allow_spinning": "1"})
    routes["OpenVINO, CPU pinning (its default)"] = openvino_model(openvino_file, {"ENABLE_CPU_PINNING": "YES"})
    routes["OpenVINO, THROUGHPUT hint"] = openvino_model(openvino_file, {"PERFORMANCE_HINT": "THROUGHPUT"})
    if not compiled:
        return routes
    folded = reparameterize(model)
    routes["torch.compile (default)"] = torch.compile(copy.deepcopy(folded))
    routes["torch.compile, freezing"] = torch.compile(copy.deepcopy(folded), options={"freezing": True})
    return routes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="specs/resnet50.res")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (each calls every variant once)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out the torch.compile variants (minutes of compiling on a small CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    network = resdsl.compile(args.spec)
    model = network.to_torch(seed=0).eval()
    example = torch.randn(args.batch, *network.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(example)
    with tempfile.TemporaryDirectory(prefix="route-settings-") as workdir:
        routes = variants(model, example, Path(workdir), args.compile)
        times = timed(routes, example, expected, args.runs)
    eager = statistics.median(times["torch eager"])
    print("\n| route | p50 ms | vs eager |\n|---|---:|---:|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median * 1e3:.1f} | {eager / median:.2f}x |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


def timed(routes: dict[str, Callable[[torch.Tensor], torch.Tensor]], example: torch.Tensor, expected: torch.Tensor,
          runs: int) -> dict[str, list[float]]:
    """Warm each variant up (printing its error against `expected`), then time them interleaved."""
    times: dict[str, list[float]] = {name: [] for name in routes}
    with torch.inference_mode():
        for name, run in routes.items():
            start = time.perf_counter()
            error = (run(example) - expected).abs().max().item() / expected.abs().max().item()
            run(example)
            print(f"{name}: warm-up {time.perf_counter() - start:.1f} s, max relative error {error:.1e}", flush=True)
        for _ in range(runs):
            for name, run in routes.items():
                start = time.perf_counter()
                run(example)
                times[name].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
