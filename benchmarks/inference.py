"""Inference latency and throughput: torch eager vs BN-folded eager vs onnxruntime (vs TensorRT fp16 on a GPU).

ResNet-50 (224x224) and the CIFAR ResNet-56 at batch 1 and 32. Routes are timed interleaved, `--repeats`
times each, and the median of the per-repeat medians is reported with the speed-up over torch eager.
Run: python benchmarks/inference.py [--repeats 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

import torch

import resdsl
from resdsl.backends import BackendUnavailable
from resdsl.backends.bench import ROUTES, measure, runner

SPECS = Path(__file__).resolve().parent.parent / "specs"
CASES = (  # spec, batch, timed runs per repeat on a 2-core CPU
    ("torchvision/resnet50.res", 1, 10),
    ("torchvision/resnet50.res", 32, 2),
    ("cifar56.res", 1, 30),
    ("cifar56.res", 32, 10),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="One repeat of few runs (smoke test).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime alike.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    machine = torch.cuda.get_device_name() if device == "cuda" else threads
    print(f"device: {machine}; torch {torch.__version__}; median of {repeats} interleaved repeats\n")
    print(f"{'network':<10}{'batch':>6}  {'route':<26}{'p50 ms':>10}{'p90 ms':>10}{'img/s':>10}{'vs eager':>10}")
    for spec, batch, runs in CASES:
        runs = 2 if args.quick else runs
        network = resdsl.compile(SPECS / spec)
        model = network.to_torch(seed=0).eval()
        example = torch.randn(batch, *network.input_shape)
        routes = ["eager", "folded", "onnx"]
        with tempfile.TemporaryDirectory() as workdir:
            runners, notes = {}, {}
            for route in [*routes, "tensorrt"]:
                precision = "fp16" if route == "tensorrt" else "fp32"
                try:
                    runners[route] = (runner(route, model, example, precision, device, Path(workdir)), precision)
                except BackendUnavailable as error:
                    notes[route] = f"skipped: {error}"
            samples: dict[str, list[tuple[float, float, float]]] = {r: [] for r in runners}
            for _ in range(repeats):
                for route, (run, precision) in runners.items():
                    x = example.to(device, torch.float16 if precision == "fp16" else torch.float32)
                    samples[route].append(measure(run, x, runs=runs, warmup=max(1, runs // 5), device=device))
        eager = statistics.median(s[0] for s in samples["eager"])
        for route in [*routes, "tensorrt"]:
            label = ROUTES[route] + (" fp16" if route == "tensorrt" else "")
            if route in notes:
                print(f"{network.name:<10}{batch:>6}  {label:<26}{notes[route][:90]}")
                continue
            p50, p90, rate = (statistics.median(s[i] for s in samples[route]) for i in range(3))
            print(f"{network.name:<10}{batch:>6}  {label:<26}{p50:>10.2f}{p90:>10.2f}{rate:>10.1f}{eager / p50:>9.2f}x")


if __name__ == "__main__":
    main()
