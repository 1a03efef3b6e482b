"""Images/s of the data path (Loader + Augment) against the train step (forward, backward, SGD) on CPU.

The loader must be at least 5x faster than the step, so it never starves training.
Run: python benchmarks/train_throughput.py [--spec specs/cifar20.res] [--data CIFAR_DIR]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

import resdsl
from resdsl.data import Augment, Dataset, Loader, find_data, load_dataset, pixel_mean

TARGET = 5.0


def cifar_train(data: str | None) -> Dataset:
    """The CIFAR-10 training set if given, else 50,000 random images of its shape (the loader's cost is the same)."""
    if data is not None:
        return load_dataset("cifar10", find_data("cifar10", data), train=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return Dataset(images, torch.randint(0, 10, (50000,), generator=generator), classes=10, name="random-cifar")


def loader_rate(dataset: Dataset, batch: int, batches: int) -> float:
    """Images/s of shuffled batches through pad-4 crop-32 flip and per-pixel mean subtraction."""
    augment = Augment(pad=4, crop=32, flip=True, mean=pixel_mean(dataset))
    loader = Loader(dataset, batch, seed=0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for served, (images, _) in enumerate(loader.forever(), 1):
        augment(images, generator)
        if served == batches:
            break
    return batches * batch / (time.perf_counter() - start)


def step_rate(spec: str, batch: int, steps: int, warmup: int = 3) -> float:
    """Images/s of SGD train steps of the spec's PyTorch module on fixed inputs."""
    model = resdsl.compile(spec).to_torch().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    inputs = torch.randn(batch, 3, 32, 32)
    labels = torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(inputs), labels).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/cifar20.res")
    parser.add_argument("--data", default=None, help="a CIFAR-10 python batch directory (default: random images)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--loader-batches", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    dataset = cifar_train(args.data)
    loader = loader_rate(dataset, args.batch, args.loader_batches)
    step = step_rate(args.spec, args.batch, args.steps)
    ratio = loader / step
    print(f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{dataset.name}, batch {args.batch}")
    print(f"| {'path':<38} | {'images/s':>10} | {'ms/batch':>9} |")
    print(f"|{'-' * 40}|{'-' * 12}|{'-' * 11}|")
    for name, rate in (("Loader + Augment (pad/crop/flip/mean)", loader), (f"train step ({args.spec})", step)):
        print(f"| {name:<38} | {rate:>10,.0f} | {1000 * args.batch / rate:>9.2f} |")
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(f"loader / step = {ratio:.1f}x ({verdict} the >= {TARGET:.0f}x target)")


if __name__ == "__main__":
    main()
