"""`resdsl bench FILE --backend B`: latency and throughput of a deployment route, beside the PyTorch ones.

The work is `resdsl.benchmark.bench`; this module turns the flags into its arguments and its result into a table.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from resdsl.benchmark import NAMED, BenchError, BenchResult
from resdsl.cli.build import InputOption, PrecisionOption, input_shape
from resdsl.cli.common import CalibrationDatasetOption, SetOption, SpecArgument, fail, not_empty
from resdsl.deploy import BuildError
from resdsl.resolve import parse_overrides

BackendOption = Annotated[str, typer.Option(
    "--backend", metavar="ROUTE[,ROUTE..]",
    help=f"One of {', '.join(NAMED)}, or several separated by commas: timed interleaved in one table.")]
BatchOption = Annotated[int, typer.Option("--batch", help="Batch size.")]
RunsOption = Annotated[int, typer.Option("--runs", help="Timed runs.")]
WarmupOption = Annotated[int, typer.Option("--warmup", help="Untimed runs first.")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda if present).")]
CompareOption = Annotated[bool, typer.Option("--compare/--no-compare", help="Also time eager, BN-folded, "
                                             "torch.compile and onnxruntime (when --backend names one route).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the results as JSON.")]
CalibrationOption = Annotated[Path | None, typer.Option(
    "--calibration", metavar="DATA", help="The dataset folder whose training images calibrate openvino-int8.",
    parser=not_empty("--calibration", "a dataset folder"))]
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch and onnxruntime (default: torch's default).")]


def bench(spec: SpecArgument, backend: BackendOption = "pytorch", batch: BatchOption = 1,
          precision: PrecisionOption = "fp32", runs: RunsOption = 50, warmup: WarmupOption = 10,
          device: DeviceOption = None, compare: CompareOption = True, as_json: JsonOption = False,
          threads: ThreadsOption = None, input_: InputOption = None, set_: SetOption = None,
          calibration: CalibrationOption = None, dataset: CalibrationDatasetOption = None) -> None:
    """Time warm-up-excluded runs, routes interleaved, and print latency p50/p90 and throughput per route."""
    from resdsl.benchmark import bench as time_routes
    from resdsl.data import DataError

    try:
        result = time_routes(spec, backend, batch=batch, precision=precision, runs=runs, warmup=warmup,
                             device=device, compare=compare, threads=threads, input_shape=input_shape(input_),
                             params=parse_overrides(set_), calibration=calibration,
                             dataset=dataset)
    except (BenchError, BuildError, DataError) as error:
        fail(str(error))
    if as_json:
        fields = {key: value for key, value in asdict(result).items() if key != "timings"}
        typer.echo(json.dumps({**fields, "input": list(result.input),
                               "results": [asdict(t) for t in result.timings]}, indent=2))
    else:
        typer.echo(table(result))


def table(result: BenchResult) -> str:
    """Rows of route, p50, p90, throughput and speed-up over torch eager (the first row is the one asked for)."""
    timings, threads = result.timings, result.threads
    eager = next((t.p50_ms for t in timings if t.route == "torch eager" and not t.error), None)
    header = (f"{result.network} on {result.device}, {result.precision}, batch {timings[0].batch}, {threads} CPU "
              f"thread{'s' * (threads > 1)}")
    lines = [header, f"{'route':<28}{'p50 ms':>10}{'p90 ms':>10}{'img/s':>10}{'vs eager':>10}"]
    for t in timings:
        if t.error:
            lines.append(f"{t.route:<28}{t.error}")
            continue
        ratio = f"{eager / t.p50_ms:.2f}x" if eager else ""
        lines.append(f"{t.route:<28}{t.p50_ms:>10.2f}{t.p90_ms:>10.2f}{t.throughput:>10.1f}{ratio:>10}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
