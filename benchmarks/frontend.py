"""Front-end speed: parse + resolve + IR + checks + counts, against constructing torchvision's model;
and `resdsl check` / `resdsl info` as whole processes, start-up and imports included.

Targets: resnet152 at most 1/4 of `torchvision.models.resnet152()`; cifar1202 under 0.5 s; a 10,000-layer
net at most ~10x the 1202-layer one (linear in depth) (issue 2); `resdsl check specs/resnet152.res` and
`resdsl info` at most 0.4 s of CPU as whole processes, least and median of 10 (issues 13, 20).
Run: python benchmarks/frontend.py  (--cli: only the whole-process part, which needs no torch)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import resdsl

SPECS = Path(__file__).resolve().parent.parent / "specs"
REPEATS = 5
PROCESS_REPEATS = 10
PROCESS_TARGET = 0.4  # CPU seconds


def _median_seconds(work: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median CPU seconds of this process (steadier than wall time on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_seconds(argv: list[str], repeats: int = PROCESS_REPEATS) -> tuple[float, float]:
    """Least and median CPU seconds (user + system) of running `argv` as a whole process; the least is the
    steadier figure on a machine shared with other jobs."""
    subprocess.run(argv, check=True, capture_output=True)  # warm the file cache and any parser cache
    times = []
    for _ in range(repeats):
        start = _children_cpu()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(_children_cpu() - start)
    return min(times), statistics.median(times)


def slowest_imports(argv: list[str], shown: int = 6) -> list[tuple[str, float]]:
    """Import seconds (-X importtime, wall) of `argv`, a Python command line: the costliest top-level
    packages, cumulative, and resdsl's own modules, self time summed."""
    result = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], check=True, capture_output=True, text=True)
    packages: dict[str, float] = {}
    own = 0.0
    for line in result.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2].strip()
        if name.startswith("resdsl"):
            own += int(fields[0]) / 1e6
        elif "." not in name and not name.startswith("_") and name != "site":
            packages[name] = max(packages.get(name, 0.0), int(fields[1]) / 1e6)
    return [*sorted(packages.items(), key=lambda item: -item[1])[:shown], ("resdsl's own modules", own)]


# A network without a `train` section: its check needs no pydantic (every zoo spec inherits a `train` section).
UNTRAINED = "network tiny {\n  input 3x8x8\n  stem {\n    conv 3x3, 4\n    relu\n  }\n  head {\n    avgpool\n  }\n}\n"


def whole_processes() -> None:
    resdsl_cli = [sys.executable, "-m", "resdsl"]
    with tempfile.TemporaryDirectory() as folder:
        untrained = Path(folder) / "untrained.res"
        untrained.write_text(UNTRAINED)
        _whole_processes(resdsl_cli, untrained)


def _whole_processes(resdsl_cli: list[str], untrained: Path) -> None:
    rows = [
        ("python -c pass (interpreter start-up)", process_seconds([sys.executable, "-c", "pass"])),
        ("python -c 'import resdsl'", process_seconds([sys.executable, "-c", "import resdsl"])),
        ("resdsl --version", process_seconds([*resdsl_cli, "--version"])),
        ("resdsl check specs/resnet152.res", process_seconds([*resdsl_cli, "check", str(SPECS / "resnet152.res")])),
        ("resdsl check (a spec with no train section)", process_seconds([*resdsl_cli, "check", str(untrained)])),
        ("resdsl info specs/resnet152.res", process_seconds([*resdsl_cli, "info", str(SPECS / "resnet152.res")])),
        ("resdsl info resnet50 --json", process_seconds([*resdsl_cli, "info", "resnet50", "--json"])),
        ("resdsl zoo", process_seconds([*resdsl_cli, "zoo"])),
    ]
    print(f"{'whole process (CPU of ' + str(PROCESS_REPEATS) + ' runs)':<45} {'least':>9} {'median':>9}  note")
    for name, (least, median) in rows:
        note = f"target <= {PROCESS_TARGET} s" if name.startswith(("resdsl check spec", "resdsl info")) else ""
        print(f"{name:<45} {least * 1000:6.0f} ms {median * 1000:6.0f} ms  {note}")
    imports = slowest_imports([*resdsl_cli, "check", str(SPECS / "resnet152.res")])
    print("imports of resdsl check (-X importtime, wall): "
          + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in imports))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--cli", action="store_true", help="only time resdsl check/info as whole processes")
    if not parser.parse_args().cli:
        in_process()
        print()
    whole_processes()


def in_process() -> None:
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
