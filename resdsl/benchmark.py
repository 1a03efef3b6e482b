"""`resdsl.bench`: latency and throughput of a network's deployment routes, timed side by side, as `resdsl bench`.

Nothing here prints or exits: bad arguments raise UsageError, a network too large for the memory here BuildError,
and the one route asked for, when it cannot run, BenchError; a compared route that cannot run carries its reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.backends import BACKENDS
from resdsl.deploy import check_choice, check_memory, check_precision, load_network, prepare_model, with_input
from resdsl.limits import quoted, shortened, usable_cpus
from resdsl.network import Network
from resdsl.resolve import UsageError

if TYPE_CHECKING:
    import torch

    from resdsl.backends.bench import Timing
    from resdsl.expr import Value

# What a route name means: the build backends, and the PyTorch routes by name; the route each one times.
PRIMARY = {"pytorch": "eager", "export": "export", "onnx": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}
NAMED = {**PRIMARY, "eager": "eager", "folded": "folded", "compiled": "compile", "openvino-int8": "openvino-int8"}
COMPARED = ("eager", "folded", "compile", "onnx")
MAX_RUNS = 100_000  # timed runs: p50 and p90 are steady long before; more only takes hours
MAX_WARMUP = 10_000


class BenchError(Exception):
    """The one route asked for cannot run here; the message says why."""


@dataclass(frozen=True)
class BenchResult:
    """The timings of each route (the ones asked for first), and what they were measured on."""

    network: str
    input: tuple[int, ...]
    device: str
    precision: str
    threads: int
    runs: int
    warmup: int
    timings: list[Timing]


def bench(spec: str | Path | Network, routes: str | Sequence[str] = "pytorch", *, batch: int = 1,
          precision: str = "fp32", runs: int = 50, warmup: int = 10, device: str | None = None,
          compare: bool = True, threads: int | None = None, input_shape: tuple[int, int, int] | None = None,
          params: dict[str, Value] | None = None, calibration: str | Path | None = None,
          dataset: str | None = None) -> BenchResult:
    """Time `runs` calls of each route after `warmup` untimed ones, the routes interleaved round by round.

    `routes` names one route or several (see NAMED); with one and `compare`, eager, BN-folded, torch.compile and
    onnxruntime are timed beside it. The openvino-int8 route is calibrated on `calibration`'s training images
    (a dataset folder, as `resdsl eval --data`, holding `dataset`, by default the spec's recipe's), fed in 0-1.
    """
    names = route_names([routes] if isinstance(routes, str) else list(routes))
    check_options(names, batch, precision, runs, warmup, threads)
    check_calibration(names, calibration, dataset)
    network = with_input(load_network(spec, params), input_shape)
    check_memory(network, batch)
    import torch

    from resdsl.backends.bench import bench as time_routes

    if threads is not None:
        torch.set_num_threads(threads)  # onnxruntime sessions take torch's count (resdsl.backends.onnx.load)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_choice("--device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda needs an NVIDIA GPU with its driver, and torch sees none here")
    chosen = [NAMED[name] for name in names]
    if compare and len(chosen) == 1:
        chosen += [route for route in COMPARED if route != chosen[0]]
    batches = calibration_batches(network, calibration, batch, dataset) if calibration is not None else None
    model = prepare_model(network, None, 0)
    example = torch.randn(batch, *network.input_shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="resdsl-bench-") as workdir:
        timings = time_routes(chosen, model, example, precision=precision, device=device, runs=runs,
                              warmup=warmup, workdir=Path(workdir), calibration=batches,
                              required=1 if len(names) == 1 else 0)
    if len(names) == 1 and timings[0].error:  # the route asked for, whatever the comparison routes did
        raise BenchError(timings[0].error)
    return BenchResult(network.name, tuple(network.input_shape), device, precision, torch.get_num_threads(), runs,
                       warmup, timings)


def route_names(names: list[str]) -> list[str]:
    """Route names each known and each once (UsageError otherwise)."""
    names = [name.strip() for text in names for name in text.split(",")]
    unknown = [name for name in names if name not in NAMED]
    if unknown:
        raise UsageError(f"--backend takes {', '.join(NAMED)} (several separated by commas), not "
                         f"{quoted(unknown[0])}")
    routes = [NAMED[name] for name in names]
    if repeated := sorted({name for name, route in zip(names, routes, strict=True) if routes.count(route) > 1}):
        raise UsageError(f"--backend names the same route more than once ({', '.join(repeated)}); give each once")
    return names


def check_options(names: list[str], batch: int, precision: str, runs: int, warmup: int, threads: int | None) -> None:
    check_precision(precision)
    for name in (name.removesuffix("-int8") for name in names):
        if name in BACKENDS and precision not in BACKENDS[name].precisions:
            raise UsageError(f"the {name} backend builds {' or '.join(BACKENDS[name].precisions)}, not {precision}")
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, not {batch}")
    for flag, value, least, most in (("--runs", runs, 2, MAX_RUNS), ("--warmup", warmup, 0, MAX_WARMUP)):
        if not least <= value <= most:
            raise UsageError(f"{flag} must be from {least} to {most:,}, not {shortened(str(value))}")
    cpus = usable_cpus()
    if threads is not None and not 1 <= threads <= cpus:
        raise UsageError(f"--threads must be between 1 and the {cpus} CPUs usable here, not {threads}")


def check_calibration(names: list[str], calibration: str | Path | None, dataset: str | None) -> None:
    if "openvino-int8" in names and calibration is None:
        raise UsageError("the openvino-int8 route needs --calibration DATA, the dataset whose training images "
                         "calibrate it")
    if "openvino-int8" not in names and calibration is not None:
        raise UsageError("--calibration calibrates the openvino-int8 route; it goes with --backend openvino-int8")
    if dataset is not None and calibration is None:
        raise UsageError("--dataset names the dataset --calibration holds; it goes with --calibration")


def calibration_batches(network: Network, data: str | Path, batch: int, dataset: str | None) -> list[torch.Tensor]:
    """The INT8 route's calibration batches: DATA's training images, in 0-1 as the bench's model takes them."""
    from resdsl.backends import BatchProfile
    from resdsl.backends.preprocess import InputContract, Normalization
    from resdsl.quantization import calibration_batches as batches
    from resdsl.quantization import datasets

    train, _ = datasets(network, None, data, dataset)
    contract = InputContract("float", Normalization(source="bench"))
    return batches(train, network, contract, BatchProfile(batch, batch, batch), seed=0)
