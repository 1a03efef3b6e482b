"""Time `resdsl viz` on the largest zoo nets: lowering, building the diagram, and Graphviz's layout.

Run: python benchmarks/viz.py   (needs Graphviz's `dot`). The budget is "renders in seconds".
"""

from __future__ import annotations

import time
from pathlib import Path

from resdsl.network import lower_unchecked
from resdsl.viz import draw, render

SPECS = Path(__file__).resolve().parent.parent / "specs"
BUDGET_S = 10.0
CASES = [
    ("resnet34", "block", False, "svg"),
    ("resnet34", "block", True, "png"),
    ("resnet50", "stage", False, "svg"),
    ("torchvision/resnet152", "block", True, "svg"),
    ("torchvision/resnet152", "op", False, "svg"),
    ("torchvision/resnet152", "op", False, "png"),
    ("cifar1202", "stage", False, "svg"),
    ("cifar1202", "block", False, "svg"),
    ("cifar1202", "block", True, "svg"),
    ("cifar1202", "op", False, "svg"),
    ("preact/preact1001", "op", False, "svg"),
]


def main() -> None:
    header = f"{'spec':<24}{'level':<17}{'fmt':<5}{'nodes':>7}{'lower s':>9}{'draw s':>8}{'dot s':>8}" \
             f"{'total s':>9}{'/budget':>9}"
    print(header)
    print("-" * len(header))
    for spec, level, expand, fmt in CASES:
        start = time.perf_counter()
        graph, _ = lower_unchecked(SPECS / f"{spec}.res")
        lowered = time.perf_counter()
        diagram = draw(graph, level, expand)
        drawn = time.perf_counter()
        render(diagram, fmt)
        done = time.perf_counter()
        name = level + (" --expand" if expand else "")
        total = done - start
        print(f"{spec:<24}{name:<17}{fmt:<5}{len(graph):>7}{lowered - start:>9.2f}"
              f"{drawn - lowered:>8.2f}{done - drawn:>8.2f}{total:>9.2f}{total / BUDGET_S:>9.2f}")


if __name__ == "__main__":
    main()
