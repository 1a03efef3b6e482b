"""Images/s of resdsl's image-folder pipeline against torchvision's ImageFolder + DataLoader, per worker count.

Both read the same synthetic JPEG folder (ImageNet-like sizes, written here) with the same number of worker
processes and batch size, and deliver batches of 224x224 training views:
- resdsl: `Loader` with the paper's view (shorter side in [256, 480], random 224 crop, flip), decoded by
  torchvision.io (or PIL, or nvjpeg on a GPU) in the workers, uint8 out, pinned on a GPU; the mean
  subtraction and PCA lighting then run on the device (timed in the "+ normalize" column, on the same device);
- torchvision: `ImageFolder` + `DataLoader(num_workers=N, pin_memory=True, shuffle=True)` with the
  transforms of torchvision's reference ImageNet recipe: RandomResizedCrop(224), RandomHorizontalFlip,
  PILToTensor, ConvertImageDtype(float), Normalize.
Each figure is the median of `--repeats` timed runs of `--batches` batches after `--warmup` batches
(worker start-up excluded); the runs of the two pipelines alternate.

    python benchmarks/input_pipeline.py                      # CPU, workers 1, 2, 4
    python benchmarks/input_pipeline.py --device cuda --workers 4,8,16 --decoders auto,nvjpeg
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from resdsl.data import Augment, Loader, load_dataset
from resdsl.data.views import TrainView

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_folder(root: Path, images: int, classes: int = 10, seed: int = 0) -> Path:
    """`images` JPEGs (quality 90) of ImageNet's typical sizes, 300-500 x 250-500 pixels, in train/<class>/.

    Each is a smooth random field with fine noise, so that it compresses like a photograph (~60 KB).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for number in range(images):
        folder = root / "train" / f"n{number % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        coarse = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((width, height),
                                                                                           Image.Resampling.BICUBIC)
        pixels = np.asarray(coarse).astype(np.int16) + rng.normal(0, 10, (height, width, 3)).astype(np.int16)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{number}.JPEG", quality=90)
    (root / "val").mkdir(exist_ok=True)
    return root


def ours(root: Path, workers: int, batch: int, device: torch.device, decoder: str) -> Iterator[torch.Tensor]:
    data = load_dataset("imagenet", root, train=True).sized(224)
    loader = Loader(data, batch, seed=0, device=device, view=TrainView(224, (256, 480), flip=True),
                    workers=workers, decoder=decoder)
    return (images for images, _ in loader.forever())


def torchvision_reference(root: Path, workers: int, batch: int, device: torch.device) -> Iterator[torch.Tensor]:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                    transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float),
                                    transforms.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(root / "train"), transform), batch_size=batch,
                                         shuffle=True, num_workers=workers, pin_memory=True, drop_last=True,
                                         persistent_workers=workers > 0)

    def forever() -> Iterator[torch.Tensor]:
        while True:
            for images, _ in loader:
                yield images.to(device, non_blocking=True)

    return forever()


def rate(batches: Iterator[torch.Tensor], warmup: int, count: int, device: torch.device,
         finish: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> float:
    """Images per second over `count` batches after `warmup` ones."""
    for _ in range(warmup):
        finish(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += len(finish(next(batches)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="an image folder to read (default: write a synthetic one)")
    parser.add_argument("--images", type=int, default=512, help="images in the synthetic folder")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--decoders", default="auto,pil", help="resdsl decoders: auto, torchvision, pil, nvjpeg")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=24, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (worker start-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    # DataLoader's advice about pinning without a GPU and about more workers than cores: both chosen here
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    device = torch.device(args.device)
    counts = [int(n) for n in args.workers.split(",")]
    decoders = args.decoders.split(",")
    normalize = Augment(mean=torch.tensor(MEAN, device=device).view(3, 1, 1), lighting=0.1)
    generator = torch.Generator(device).manual_seed(0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    with tempfile.TemporaryDirectory(prefix="resdsl-pipeline-") as temp:
        root = args.folder
        if root is None:
            start = time.perf_counter()
            root = write_folder(Path(temp), args.images)
            print(f"wrote {args.images} JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
        files = sorted((root / "train").rglob("*.JPEG"))
        mean_kb = statistics.mean(f.stat().st_size for f in files) / 1024
        print(f"{machine}, {cores} cores, torch {torch.__version__}; {len(files)} JPEGs of {mean_kb:.0f} KB on "
              f"average; batch {args.batch}; median of {args.repeats} runs of {args.batches} batches\n", flush=True)
        header = ["workers", *(f"resdsl {d}" for d in decoders), f"resdsl {decoders[0]} + normalize",
                  "torchvision", f"ratio ({decoders[0]})"]
        rows = []
        for workers in counts:
            runs: dict[str, list[float]] = {name: [] for name in header[1:-1]}
            for _ in range(args.repeats):
                for decoder in decoders:
                    runs[f"resdsl {decoder}"].append(rate(ours(root, workers, args.batch, device, decoder),
                                                          args.warmup, args.batches, device))
                runs[header[len(decoders) + 1]].append(rate(
                    ours(root, workers, args.batch, device, decoders[0]), args.warmup, args.batches, device,
                    lambda x: normalize(x, generator)))
                runs["torchvision"].append(rate(torchvision_reference(root, workers, args.batch, device),
                                                args.warmup, args.batches, device))
            medians = {name: statistics.median(values) for name, values in runs.items()}
            rows.append([str(workers), *(f"{v:,.0f}" for v in medians.values()),
                         f"{medians[header[1]] / medians['torchvision']:.2f}"])
            print("  " + "  ".join(f"{h} {c}" for h, c in zip(header, rows[-1], strict=True)), flush=True)
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
