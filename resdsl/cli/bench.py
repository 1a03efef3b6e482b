"""`resdsl bench FILE --backend B`: latency and throughput of a deployment route, beside the PyTorch ones."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from resdsl.backends import BACKENDS
from resdsl.cli.build import InputOption, PrecisionOption, input_shape
from resdsl.cli.common import SetOption, SpecArgument, fail, load_network, shortened
from resdsl.deploy import BuildError, check_choice, check_memory, check_precision, prepare_model, with_input
from resdsl.limits import usable_cpus

PRIMARY = {"pytorch": "eager", "export": "export", "onnx": "onnx", "tensorrt": "tensorrt"}
COMPARED = ("eager", "folded", "compile", "onnx")
MAX_RUNS = 100_000  # timed runs: p50 and p90 are steady long before; more only takes hours
MAX_WARMUP = 10_000


def bench(
    spec: SpecArgument,
    backend: Annotated[str, typer.Option("--backend", help=f"One of {', '.join(PRIMARY)}.")] = "pytorch",
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = 1,
    precision: PrecisionOption = "fp32",
    runs: Annotated[int, typer.Option("--runs", help="Timed runs.")] = 50,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 10,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda if present).")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare",
                                          help="Also time eager, BN-folded, torch.compile and onnxruntime.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads for torch and onnxruntime (default: torch's default).")] = None,
    input_: InputOption = None,
    set_: SetOption = None,
) -> None:
    """Time warm-up-excluded runs and print latency p50/p90 and throughput per route."""
    check_choice("--backend", backend, tuple(PRIMARY))
    check_precision(precision)
    if precision not in BACKENDS[backend].precisions:
        fail(f"the {backend} backend builds {' or '.join(BACKENDS[backend].precisions)}, not {precision}", 2)
    if batch < 1:
        fail(f"--batch must be at least 1, not {batch}", 2)
    for flag, value, least, most in (("--runs", runs, 2, MAX_RUNS), ("--warmup", warmup, 0, MAX_WARMUP)):
        if not least <= value <= most:
            fail(f"{flag} must be from {least} to {most:,}, not {shortened(str(value))}", 2)
    cpus = usable_cpus()
    if threads is not None and not 1 <= threads <= cpus:
        fail(f"--threads must be between 1 and the {cpus} CPUs usable here, not {threads}", 2)
    try:
        network = with_input(load_network(spec, set_), input_shape(input_))
        check_memory(network, batch)
    except BuildError as error:
        fail(str(error))
    import torch

    if threads is not None:
        torch.set_num_threads(threads)  # onnxruntime sessions take torch's count (resdsl.backends.onnx.load)

    from resdsl.backends.bench import bench as time_routes

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_choice("--device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda needs an NVIDIA GPU with its driver, and torch sees none here")
    primary = PRIMARY[backend]
    routes = [primary, *(r for r in COMPARED if r != primary)] if compare else [primary]
    model = prepare_model(network, None, 0)
    example = torch.randn(batch, *network.input_shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="resdsl-bench-") as workdir:
        results = time_routes(routes, model, example, precision=precision, device=device, runs=runs,
                              warmup=warmup, workdir=Path(workdir))
    if results[0].error and not compare:
        fail(results[0].error)
    if as_json:
        typer.echo(json.dumps({"network": network.name, "input": list(network.input_shape), "device": device,
                               "precision": precision, "threads": torch.get_num_threads(), "runs": runs,
                               "warmup": warmup,
                               "results": [asdict(r) for r in results]}, indent=2))
    else:
        typer.echo(table(network.name, device, precision, torch.get_num_threads(), results))


def table(name: str, device: str, precision: str, threads: int, results: list) -> str:
    """Rows of route, p50, p90, throughput and speed-up over torch eager (the first row is the one asked for)."""
    eager = next((r.p50_ms for r in results if r.route == "torch eager" and not r.error), None)
    header = f"{name} on {device}, {precision}, batch {results[0].batch}, {threads} CPU thread{'s' * (threads > 1)}"
    lines = [header, f"{'route':<28}{'p50 ms':>10}{'p90 ms':>10}{'img/s':>10}{'vs eager':>10}"]
    for r in results:
        if r.error:
            lines.append(f"{r.route:<28}{r.error}")
            continue
        ratio = f"{eager / r.p50_ms:.2f}x" if eager else ""
        lines.append(f"{r.route:<28}{r.p50_ms:>10.2f}{r.p90_ms:>10.2f}{r.throughput:>10.1f}{ratio:>10}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
