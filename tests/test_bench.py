"""`resdsl bench`: timed routes side by side, JSON output, and clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_resdsl
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app

pytestmark = pytest.mark.torch

CIFAR20 = str(Path(__file__).resolve().parent.parent / "specs" / "cifar20.res")
TINY = "network tiny {\n  input 1x8x8\n  stem {\n    conv 3x3, 4\n  }\n  head {\n    avgpool\n    flatten\n" \
       "    linear 2\n  }\n}\n"


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_bench_json_reports_latency_percentiles_and_throughput():
    result = run("bench", CIFAR20, "--runs", 5, "--warmup", 1, "--batch", 2, "--no-compare", "--json")
    assert result.exit_code == 0, result.output
    (timing,) = json.loads(result.stdout)["results"]
    assert timing["route"] == "torch eager" and timing["batch"] == 2 and not timing["error"]
    assert 0 < timing["p50_ms"] <= timing["p90_ms"]
    assert timing["throughput"] > 0


def test_bench_on_cpu_puts_eager_folded_compiled_and_onnxruntime_side_by_side(tiny_workspace: Path):
    # a two-block net: torch.compile's code generation, most of this test's time, grows with the layers
    result = run("bench", tiny_workspace / "tiny.res", "--backend", "onnx", "--runs", 2, "--warmup", 1, "--json")
    assert result.exit_code == 0, result.output
    routes = [r["route"] for r in json.loads(result.stdout)["results"]]
    assert routes == ["onnxruntime", "torch eager", "torch eager, BN folded", "torch.compile (BN folded)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_bench_tensorrt_without_a_gpu_exits_1_naming_what_is_missing():
    result = run("bench", CIFAR20, "--backend", "tensorrt", "--no-compare", "--runs", 2)
    assert result.exit_code == 1 and "NVIDIA GPU" in result.output and "Traceback" not in result.output


def test_bench_of_one_route_that_cannot_run_here_fails_even_with_the_comparison(tmp_path: Path) -> None:
    """TensorRT on the CPU cannot run: the route asked for is missing, so the command fails (exit 1) with the
    reason, as it does with --no-compare, instead of printing the other routes and exiting 0."""
    (tmp_path / "tiny.res").write_text(TINY)
    result = run_resdsl("bench", "tiny.res", "--backend", "tensorrt", "--device", "cpu", "--runs", "2",
                        "--warmup", "0", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_the_comparison_routes_are_not_built_when_the_route_asked_for_cannot_run(tmp_path: Path) -> None:
    from resdsl.backends.bench import bench

    model = resdsl.compile(TINY).to_torch(seed=0).eval()
    timings = bench(["tensorrt", "compile"], model, torch.randn(1, 1, 8, 8), precision="fp32", device="cpu", runs=1,
                    warmup=0, workdir=tmp_path, required=1)
    assert timings[0].error and not timings[1].error and timings[1].p50_ms != timings[1].p50_ms  # NaN: not timed


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_threads_sets_torch_and_onnxruntime_intra_op_threads(restore_threads, monkeypatch):
    import onnxruntime

    session_threads = []
    session = onnxruntime.InferenceSession

    def recording_session(path, options, **kwargs):
        session_threads.append(options.intra_op_num_threads)
        return session(path, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    result = run("bench", CIFAR20, "--backend", "onnx", "--threads", 1, "--runs", 2, "--warmup", 0, "--no-compare",
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["threads"] == 1 and torch.get_num_threads() == 1
    assert session_threads and set(session_threads) == {1}


@pytest.mark.parametrize("flags", [("--runs", "1"), ("--batch", "0"), ("--precision", "int8"),
                                   ("--backend", "coreml"), ("--device", "tpu"), ("--threads", "0"),
                                   ("--threads", "100000")])
def test_bench_bad_flag_values_exit_2(flags):
    result = run("bench", CIFAR20, *flags)
    assert result.exit_code == 2 and result.output.startswith("error: ")


@pytest.mark.parametrize("flags, message", [
    (("--runs", "1000000000"), "--runs must be from 2 to 100,000, not 1000000000"),
    (("--warmup", "99999999999999999999"), "--warmup must be from 0 to 10,000, not 99999999999999999999"),
])
def test_bench_refuses_runs_that_would_not_finish_naming_the_bound(flags, message):
    result = run("bench", CIFAR20, *flags)
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n"


def test_bench_names_the_input_flag_of_an_input_over_the_limit():
    result = run("bench", CIFAR20, "--input", "3x100000x100000")
    assert result.exit_code == 1 and result.stderr.startswith("error: --input 3x100000x100000: ")


def test_bench_routes_are_timed_interleaved_one_call_of_each_per_round(monkeypatch, tmp_path):
    from resdsl.backends import bench as timing

    calls = []
    monkeypatch.setattr(timing, "runner", lambda route, *args: lambda x: calls.append(route))
    results = timing.bench(["eager", "onnx", "openvino"], torch.nn.Identity(), torch.zeros(1, 3, 4, 4),
                           precision="fp32", device="cpu", runs=3, warmup=2, workdir=tmp_path)
    assert calls == ["eager"] * 2 + ["onnx"] * 2 + ["openvino"] * 2 + ["eager", "onnx", "openvino"] * 3
    assert [r.route for r in results] == ["torch eager", "onnxruntime", "OpenVINO"]
    assert all(r.p50_ms > 0 and not r.error for r in results)


def test_bench_of_several_routes_prints_one_table_with_the_ratio_to_eager(restore_threads):
    result = run("bench", CIFAR20, "--backend", "eager,folded,onnx,openvino", "--threads", 1, "--batch", 2,
                 "--runs", 3, "--warmup", 1)
    assert result.exit_code == 0, result.output
    header, columns, *rows = result.stdout.splitlines()
    assert header == "cifar20 on cpu, fp32, batch 2, 1 CPU thread"
    assert columns.split() == ["route", "p50", "ms", "p90", "ms", "img/s", "vs", "eager"]
    assert [row[:28].strip() for row in rows] == ["torch eager", "torch eager, BN folded", "onnxruntime", "OpenVINO"]
    assert rows[0].endswith("1.00x") and all(row.endswith("x") for row in rows)


def test_bench_openvino_runs_on_the_threads_asked_for(restore_threads, monkeypatch):
    import openvino

    configs = []

    compile_model = openvino.Core.compile_model

    def recording(core, model, device, config):
        configs.append(config)
        return compile_model(core, model, device, config)

    monkeypatch.setattr(openvino.Core, "compile_model", recording)  # resdsl keeps one Core for the process
    result = run("bench", CIFAR20, "--backend", "openvino", "--threads", 1, "--runs", 2, "--warmup", 0,
                 "--no-compare", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["route"] == "OpenVINO"
    assert configs and all(c["INFERENCE_NUM_THREADS"] == 1 for c in configs)


@pytest.mark.parametrize("backends, message", [
    ("eager,coreml", "--backend takes pytorch, export, onnx, openvino, tensorrt, eager, folded, compiled, "
                     "openvino-int8 (several separated by commas), not 'coreml'"),
    ("eager,onnx,pytorch", "--backend names the same route more than once (eager, pytorch); give each once"),
])
def test_bench_refuses_an_unknown_or_repeated_route_in_the_list(backends, message):
    result = run("bench", CIFAR20, "--backend", backends)
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n"
