"""Construction time, training step and inference forward: resdsl's modules against hand-written references.

Pairs: compiled ResNet-50 (specs/torchvision/resnet50.res) vs torchvision's, and compiled ResNet-56
(specs/cifar56.res) vs the plain option-A ResNet-56 written below. Runs are interleaved in one process
and each figure is the median of `--repeats` rounds; the ratio is the median of the per-round ratios
(each round times both back to back, so slow drift of the machine cancels). Targets: train step within 3%,
construction within 10%.

Construction is `network.to_torch()` (instantiating the network's generated class) against the reference's
constructor; "spec to module" adds what the reference pays once when Python imports its class: parsing
and checking the spec and generating the class (`resdsl.compile(spec).to_torch()` from scratch).

    python benchmarks/train_step.py                 # full size (meant for a GPU)
    python benchmarks/train_step.py --quick         # small batch and resolution, a few minutes on 2 CPU cores
    python benchmarks/train_step.py --no-compile    # eager modules
    python benchmarks/train_step.py --models resnet50 --batch 256 --amp bf16 --channels-last --measures "train step"
    python benchmarks/train_step.py --construction  # to_torch() vs torchvision / timm / hand-written, one thread
    python benchmarks/train_step.py --quick --models cifar56 --measures "train step" --eager-reference \
        --channels-last --threads 1 --clock cpu     # compiled resdsl (NHWC) vs the plain eager hand-written step,
                                                    # by CPU time (a shared machine's waits for a core left out)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import resdsl

SPECS = Path(resdsl.__file__).resolve().parent.parent / "specs"
MEASURES = ("construction", "spec to module", "train step", "inference")
# the process's CPU time leaves out the time spent waiting for a core on a shared machine (one thread, CPU only)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class BasicBlockA(nn.Module):
    """Two 3x3 convs; the option-A shortcut subsamples and appends zero channels."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra:
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + shortcut, inplace=True)


class ResNet56(nn.Module):
    """The paper's CIFAR-10 ResNet-56 (n = 9, widths 16/32/64, option A; n = 18 is ResNet-110), written by hand."""

    def __init__(self, n: int = 9, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlockA(cin, cout, stride), *(BasicBlockA(cout, cout, 1) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@dataclass(frozen=True)
class Pair:
    """One comparison: resdsl's spec, the reference's constructor, and the input they take."""

    name: str
    spec: Path
    reference: Callable[[], nn.Module]
    reference_name: str
    batch: int
    size: int
    classes: int


def pairs(quick: bool) -> list[Pair]:
    return [
        Pair("resnet50", SPECS / "torchvision/resnet50.res", torchvision.models.resnet50, "torchvision",
             4 if quick else 64, 112 if quick else 224, 1000),
        Pair("cifar56", SPECS / "cifar56.res", ResNet56, "hand-written", 32 if quick else 128, 32, 10),
        Pair("resnet152d", SPECS / "timm/resnet101d.res", _timm("resnet152d"), "timm", 4 if quick else 64,
             112 if quick else 224, 1000),
        Pair("cifar110", SPECS / "cifar110.res", partial(ResNet56, 18), "hand-written", 32 if quick else 128, 32, 10),
    ]


def _timm(name: str) -> Callable[[], nn.Module]:
    def create() -> nn.Module:
        import timm

        return timm.create_model(name)

    return create


SPEC_PARAMS = {"resnet152d": {"depth2": 8, "depth3": 36}}  # resnet101d's spec with ResNet-152's depths
CONSTRUCTION = ["--models", "resnet50,resnet152d,cifar110", "--measures", "construction,spec to module",
                "--threads", "1"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Medians of one interleaved comparison, and the spread of the per-round ratios."""

    ours: float
    reference: float
    ratio: float  # median over rounds of ours / reference, each pair timed back to back
    ratio_iqr: tuple[float, float]


def _interleaved(ours: Callable[[], object], reference: Callable[[], object], repeats: int,
                 device: torch.device, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time both `repeats` times, alternating which runs first in each round."""
    rounds: list[tuple[float, float]] = []
    for r in range(repeats):
        seconds = {}
        for name, function in (("ours", ours), ("reference", reference))[:: 1 if r % 2 == 0 else -1]:
            _sync(device)
            start = clock()
            function()
            _sync(device)
            seconds[name] = clock() - start
        rounds.append((seconds["ours"], seconds["reference"]))
    ratios = statistics.quantiles([a / b for a, b in rounds], n=4)
    return Timing(statistics.median(a for a, _ in rounds), statistics.median(b for _, b in rounds), ratios[1],
                  (ratios[0], ratios[2]))


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None,
                compile_optimizer: bool = False, compile_forward_backward: bool = False) -> Callable[[], torch.Tensor]:
    """One SGD step (momentum 0.9, weight decay 1e-4) on the batch; returns the loss.

    `compile_optimizer`: the parameter update is compiled too (inductor fuses SGD's per-parameter updates).
    `compile_forward_backward`: zero_grad, the forward, the loss and the backward are compiled as one function
    (`model` given uncompiled); with compiled autograd on, dynamo traces the backward as one graph too.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(x.device.type, enabled=amp == torch.float16)
    update = torch.compile(optimizer.step) if compile_optimizer else optimizer.step

    def forward_backward() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        return loss.detach()

    gradients = torch.compile(forward_backward) if compile_forward_backward else forward_backward

    def step() -> torch.Tensor:
        loss = gradients()
        if scaler.is_enabled():
            scaler.step(optimizer)
        else:
            update()
        scaler.update()
        return loss

    return step


# the convolutions' own kernels (oneDNN's or the fallback's) as torch.profiler names them, forward and backward
CONVOLUTION_FORWARD = {"aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d"}
CONVOLUTION_BACKWARD = {"aten::convolution_backward"}


def _profile(step: Callable[[], object]) -> tuple[float, float, float]:
    """One run of `step` under torch.profiler: seconds in convolution forward, convolution backward, everything else.

    Self CPU time per operator, so a convolution's time is its kernel's, and the rest is every other operator,
    compiled kernels and Python included."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step()
    events = profiler.key_averages()
    forward = sum(e.self_cpu_time_total for e in events if e.key in CONVOLUTION_FORWARD) / 1e6
    backward = sum(e.self_cpu_time_total for e in events if e.key in CONVOLUTION_BACKWARD) / 1e6
    return forward, backward, sum(e.self_cpu_time_total for e in events) / 1e6 - forward - backward


def _inference(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            model(x)

    return forward


def run(pair: Pair, args: argparse.Namespace, device: torch.device) -> list[tuple[str, Timing]]:
    """Each measure's timing for one pair."""
    params = SPEC_PARAMS.get(pair.name, {})
    network = resdsl.compile(pair.spec, **params)
    rows = []
    if "construction" in args.measures:
        rows.append(("construction", _interleaved(network.to_torch, pair.reference, args.repeats, device)))
    if "spec to module" in args.measures:
        rows.append(("spec to module", _interleaved(lambda: resdsl.compile(pair.spec, **params).to_torch(),
                                                    pair.reference, args.repeats, device)))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(pair.batch, 3, pair.size, pair.size, generator=generator).to(device)
    y = torch.randint(pair.classes, (pair.batch,), generator=generator).to(device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    compiled = [args.compile, args.compile and not args.eager_reference]
    models, inputs = [], []
    for build, is_compiled in zip((network.to_torch, pair.reference), compiled, strict=True):
        model = build().to(device)
        # --eager-reference: the reference is the plain eager step, whatever the compiled side is given
        nhwc = args.channels_last and (is_compiled or not args.eager_reference)
        models.append(model.to(memory_format=torch.channels_last) if nhwc else model)
        inputs.append(x.to(memory_format=torch.channels_last) if nhwc else x)
    # --compile-forward-backward: one compiled function around the plain module
    runners = [torch.compile(m) if c and not args.compile_forward_backward else m
               for m, c in zip(models, compiled, strict=True)]
    makers = (("train step", lambda m, c, x: _train_step(m, x, y, amp, c and args.compile_optimizer,
                                                          c and args.compile_forward_backward)),
              ("inference", lambda m, c, x: _inference(m, x, amp)))
    for mode, make in makers:
        if mode not in args.measures:
            continue
        for model in models:
            model.train(mode == "train step")
        steps = [make(r, c, x) for r, c, x in zip(runners, compiled, inputs, strict=True)]
        start = time.perf_counter()
        for step in steps:  # compiles, warms up
            for _ in range(args.warmup):
                step()
        print(f"  {pair.name} {mode}: warm-up (compile) {time.perf_counter() - start:.1f} s", flush=True)
        rows.append((mode, _interleaved(*steps, args.repeats, device, CLOCKS[args.clock])))
        if args.profile:
            for side, step in zip(("resdsl", pair.reference_name), steps, strict=True):
                forward, backward, rest = _profile(step)
                print(f"  {pair.name} {mode}, {side}: convolution forward {forward * 1e3:.1f} ms, backward "
                      f"{backward * 1e3:.1f} ms, everything else {rest * 1e3:.1f} ms (profiled, self CPU time)",
                      flush=True)
    return rows


def _set_inductor(parser: argparse.ArgumentParser, setting: str) -> None:
    """Apply one `--inductor NAME=VALUE` (VALUE a Python literal) to torch._inductor.config."""
    import ast

    import torch._inductor.config as config

    name, _, text = setting.partition("=")
    *path, leaf = name.split(".")
    owner = config
    for part in path:
        owner = getattr(owner, part, None)
    if owner is None or not hasattr(owner, leaf):
        parser.error(f"--inductor {setting}: torch._inductor.config has no {name}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        parser.error(f"--inductor {setting}: {text!r} is not a Python literal (True, 1, 'x')")
    setattr(owner, leaf, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batch and resolution (CPU)")
    parser.add_argument("--construction", action="store_true",
                        help=f"shorthand for {' '.join(CONSTRUCTION)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="time the eager modules")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per measure (medians reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--models", default="resnet50,cifar56",
                        help="comma-separated: resnet50, cifar56, resnet152d, cifar110")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--eager-reference", action="store_true",
                        help="compile resdsl's module only: the ratio is compiled resdsl / eager reference")
    parser.add_argument("--compile-optimizer", action="store_true",
                        help="compile the SGD update as well as the model (compiled runs)")
    parser.add_argument("--compile-forward-backward", action="store_true",
                        help="compile zero_grad, the forward, the loss and the backward as one function (compiled "
                             "runs; the update is compiled by --compile-optimizer)")
    parser.add_argument("--compiled-autograd", action="store_true",
                        help="torch._dynamo.config.compiled_autograd: the backward inside the compiled function of "
                             "--compile-forward-backward is traced and compiled as one graph")
    parser.add_argument("--inductor", action="append", default=[], metavar="NAME=VALUE",
                        help="set torch._inductor.config.NAME (e.g. cpp_wrapper=True, freezing=True); repeatable")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="what the train step and inference are timed by: wall-clock time, or the process's CPU "
                             "time (with --threads 1 on a CPU: a shared machine's waiting for a core left out)")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, one step of each side under torch.profiler: the time in convolutions "
                             "(forward, backward) and in everything else")
    parser.add_argument("--amp", choices=("bf16", "fp16"), help="autocast (fp16 with a GradScaler)")
    parser.add_argument("--batch", type=int, help="batch size (default: the pair's)")
    parser.add_argument("--size", type=int, help="image side (default: the pair's)")
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"comma-separated: {', '.join(MEASURES)}")
    args = parser.parse_args()
    if args.construction:
        args = parser.parse_args([*sys.argv[1:], *CONSTRUCTION])
    if args.compiled_autograd and not args.compile_forward_backward:
        parser.error("--compiled-autograd needs --compile-forward-backward: only a backward inside a compiled "
                     "function is compiled")
    args.measures = args.measures.split(",")
    if set(args.measures) - set(MEASURES):
        parser.error(f"unknown measure(s): {', '.join(sorted(set(args.measures) - set(MEASURES)))}")
    if args.repeats < 4 or args.warmup < 1:
        parser.error("--repeats must be at least 4 and --warmup at least 1")
    device = torch.device(args.device)
    if args.clock == "cpu" and (args.threads != 1 or device.type != "cpu"):
        parser.error("--clock cpu needs --threads 1 and --device cpu: other threads' and a GPU's time are not the "
                     "process's CPU time of one step")
    chosen = args.models.split(",")
    unknown = set(chosen) - {p.name for p in pairs(args.quick)}
    if unknown:
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    for setting in args.inductor:
        _set_inductor(parser, setting)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch._dynamo.config.compiled_autograd = args.compiled_autograd
    torch.manual_seed(0)
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, device {device}, "
          f"{args.clock} clock, {'compiled' if args.compile else 'eager'}"
          f"{' (reference eager)' if args.eager_reference else ''}"
          f"{', optimizer compiled' if args.compile_optimizer else ''}"
          f"{', forward and backward compiled as one' if args.compile_forward_backward else ''}"
          f"{', compiled autograd' if args.compiled_autograd else ''}"
          f"{''.join(f', inductor {s}' for s in args.inductor)}, {args.amp or 'fp32'}"
          f"{', channels_last' if args.channels_last else ''}, median of {args.repeats}", flush=True)
    table = []
    for pair in pairs(args.quick):
        pair = replace(pair, batch=args.batch or pair.batch, size=args.size or pair.size)
        if pair.name in chosen:
            shape = f"{pair.batch}x3x{pair.size}x{pair.size}"
            table += [(pair.name, shape, pair.reference_name, *row) for row in run(pair, args, device)]
    print(f"\n| model | input | reference | measure | resdsl ms | reference ms | ratio | ratio IQR |\n|{'---|' * 8}")
    for name, shape, reference, measure, t in table:
        print(f"| {name} | {shape} | {reference} | {measure} | {t.ours * 1e3:.1f} | {t.reference * 1e3:.1f} "
              f"| {t.ratio:.3f} | {t.ratio_iqr[0]:.3f}-{t.ratio_iqr[1]:.3f} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
