"""Front-end speed: parse + resolve + IR + checks + counts, against constructing torchvision's model.

Targets (issue 2): resnet152 at most 1/4 of `torchvision.models.resnet152()`; cifar1202 under 0.5 s;
a 10,000-layer net at most ~10x the 1202-layer one (linear in depth). Run: python benchmarks/frontend.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import resdsl

SPECS = Path(__file__).resolve().parent.parent / "specs"
REPEATS = 5


def _median_seconds(work: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median CPU seconds of this process (steadier than wall time on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    import torch
    import torchvision

    torch.set_num_threads(1)
    start = time.process_time()
    resdsl.compile(SPECS / "resnet18.res")  # builds the LALR tables once per process
    cold = time.process_time() - start

    resnet152 = _median_seconds(lambda: resdsl.compile(SPECS / "resnet152.res"))
    torchvision_152 = _median_seconds(lambda: torchvision.models.resnet152(), repeats=3)
    cifar1202 = _median_seconds(lambda: resdsl.compile(SPECS / "cifar1202.res"))
    n = 1666  # 6n + 2 = 9,998 layers
    deep = _median_seconds(lambda: resdsl.compile(SPECS / "cifar_resnet.res", n=n), repeats=3)

    rows = [
        ("first compile in a process (LALR tables)", cold, ""),
        ("resdsl resnet152 (60.2M params)", resnet152, ""),
        ("torchvision.models.resnet152()", torchvision_152, ""),
        ("  ratio resdsl / torchvision", resnet152 / torchvision_152, "target <= 0.25"),
        ("resdsl cifar1202 (1,202 layers)", cifar1202, "target < 0.5 s"),
        (f"resdsl cifar_resnet n={n} ({6 * n + 2:,} layers)", deep, ""),
        ("  ratio 9,998 / 1,202 layers", deep / cifar1202, f"depth ratio {(6 * n + 2) / 1202:.1f}, target <= ~10"),
    ]
    print(f"{'measure (median CPU time, 1 thread)':<45} {'value':>9}  note")
    for name, value, note in rows:
        shown = f"{value:8.2f}x" if name.strip().startswith("ratio") else f"{value * 1000:7.0f} ms"
        print(f"{name:<45} {shown:>9}  {note}")


if __name__ == "__main__":
    main()
