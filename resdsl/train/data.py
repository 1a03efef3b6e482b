"""The run's data: the recipe's dataset found, split, trimmed, and the network fitted to its shape;
the training loader and augmentation; a watch on whether the input pipeline keeps up with the step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from resdsl.data import Augment, DataError, Dataset, Loader, find_data, load_dataset, pixel_mean, split
from resdsl.data.images import ImageFiles
from resdsl.data.views import TEST_SIDE, TrainView
from resdsl.network import Network
from resdsl.recipe import Recipe


@dataclass
class RunData:
    train: Dataset
    val: Dataset | None
    test: Dataset
    root: Path | None = None  # the directory the files were read from


def prepare(recipe: Recipe, data_dir, seed: int, limit_train: int | None, limit_eval: int | None,
            input_shape: tuple[int, ...] | None = None) -> RunData:
    """Train/val/test of the recipe's dataset; the split and limits keep the first images of each part.

    Image folders are viewed at the recipe's crop size, or at the spec's `input_shape` without one.
    """
    root = find_data(recipe.dataset, data_dir)
    full = load_dataset(recipe.dataset, root, train=True)
    test = load_dataset(recipe.dataset, root, train=False)
    if isinstance(full.images, ImageFiles):
        size = view_size(recipe, input_shape)
        full, test = full.sized(size), test.sized(size)
    train, val = full, None
    if recipe.split is not None:
        want, held = recipe.split
        train, val = split(full, held, seed)
        if want is not None and want < len(train):
            train = _first(train, want)
    if limit_train is not None:
        train = _first(train, limit_train)
    if limit_eval is not None:
        test = _first(test, limit_eval)
        val = _first(val, limit_eval) if val is not None else None
    return RunData(train, val, test, root.resolve())


def view_size(recipe: Recipe, input_shape: tuple[int, ...] | None) -> int:
    """The side of an image folder's square views: the recipe's crop, else the spec's input size."""
    if recipe.augment is not None and recipe.augment.crop is not None:
        return recipe.augment.crop
    if input_shape is None or len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        shape = "x".join(map(str, input_shape or ()))
        raise DataError(f"image folders are cropped square: give the recipe an 'augment crop N' (the spec's input "
                        f"is {shape})")
    return input_shape[1]


def fit_network(network: Network, data: Dataset, say: Callable[[str], None]) -> Network:
    """`network` re-checked for the data's image shape if it differs; DataError if the classes do not match."""
    if data.shape is not None and tuple(data.shape) != tuple(network.input_shape):
        old = "x".join(map(str, network.input_shape))
        network = network.with_input(data.shape)
        what = "crops" if isinstance(data.images, ImageFiles) else "images"
        say(f"{network.name}: recompiled for {data.name}'s {'x'.join(map(str, data.shape))} {what} "
            f"(the spec says {old})")
    outputs = network.output_shape[0] if len(network.output_shape) == 1 else None
    if outputs != data.classes:
        raise DataError(f"{network.name} has {'x'.join(map(str, network.output_shape))} outputs but {data.name} "
                        f"has {data.classes} classes; change the spec's last linear layer")
    return network


def augmentation(recipe: Recipe, data: Dataset, spec_shape: tuple[int, ...], mean: torch.Tensor | None,
                 device: torch.device, std: torch.Tensor | None = None) -> Augment:
    """The recipe's augmentation, dividing by `std` if given (a checkpoint's, see resdsl.weights.Preprocessing); a
    crop of the spec's input size, or the default one, follows the data's size.

    For image folders the loader's workers crop and mirror (`train_view`); what is left runs on the device.
    """
    options, shape = recipe.augment, data.shape  # shape: None for an image folder not yet sized (RGB)
    for name, stat in (("mean", mean), ("std", std)):
        if stat is not None and shape is not None and tuple(stat.shape) not in ((shape[0],), shape):
            raise DataError(f"the {name} is {'x'.join(map(str, stat.shape))} and {data.name}'s images are "
                            f"{'x'.join(map(str, shape))}: it was computed on other images")
    mean = mean.to(device) if mean is not None else None
    std = std.to(device) if std is not None else None
    lighting = options.lighting if options is not None else 0.0
    channels = 3 if shape is None else shape[0]
    if lighting and channels != 3:
        raise DataError(f"'augment lighting' is AlexNet's RGB colour noise, and {data.name}'s images have "
                        f"{channels} channel(s)")
    if isinstance(data.images, ImageFiles) or shape is None:
        return Augment(mean=mean, std=std, lighting=lighting)
    if options is None:
        return Augment(mean=mean, std=std)
    crop = options.crop or shape[-1]
    default = "augment" not in recipe.given  # the paper's CIFAR augmentation, which no one chose
    if options.scale is None and (crop == spec_shape[-1] or default) and shape[-1] != crop:
        crop = shape[-1]
    if options.scale is None and crop > shape[-1]:
        side = shape[-1]
        raise DataError(f"the recipe's crop {crop} is larger than {data.name}'s {side}x{side} images, so the "
                        f"test views could not be cut: give an augment line with a crop of at most {side}, e.g. "
                        f"--augment \"pad 4, crop {side}, flip\"")
    if options.scale is not None and crop > options.scale[0]:
        raise DataError(f"the crop {crop} is larger than the scale's lower bound {options.scale[0]}")
    return Augment(pad=options.pad, crop=crop, flip=options.flip, mean=mean, std=std, scale=options.scale,
                   lighting=lighting)


def train_view(recipe: Recipe, data: Dataset, default_recipe: bool = False) -> TrainView:
    """An image folder's training view: the recipe's scale range (else the testing size), crop and flip.

    `default_recipe`: the spec has no train section, so the recipe is the paper's CIFAR one.
    """
    images = data.images
    if not isinstance(images, ImageFiles) or images.size is None:
        raise TypeError(f"{data.name} is not an image folder sized to its crop")
    size, options = images.size, recipe.augment
    if options is not None and options.pad:
        why = " (a spec without a train section gets the paper's CIFAR recipe)" if default_recipe else ""
        raise DataError(f"image folders are rescaled and cropped, not padded, and the recipe's augment says "
                        f"pad {options.pad}{why}; give e.g. --augment \"scale range(256, 480), crop 224, flip\"")
    side = round(TEST_SIDE * size)
    scale = options.scale if options is not None and options.scale is not None else (side, side)
    if scale[0] < size:
        raise DataError(f"the crop {size} is larger than the scale's lower bound {scale[0]}: give the augment line "
                        "a crop no larger than it")
    return TrainView(crop=size, scale=scale, flip=options is not None and options.flip)


def train_loader(recipe: Recipe, data: Dataset, batch: int, *, seed: int, rank: int, world_size: int,
                 device: torch.device, workers: int | None = None, decoder: str = "auto",
                 default_recipe: bool = False) -> Loader:
    """The shuffled training batches of this rank (image folders: decoded and cropped by worker processes)."""
    view = train_view(recipe, data, default_recipe) if isinstance(data.images, ImageFiles) else None
    return Loader(data, batch, shuffle=True, drop_last=True, seed=seed, rank=rank, world_size=world_size,
                  device=device, view=view, workers=workers, decoder=decoder)


def mean_image(recipe: Recipe, train: Dataset, workers: int | None = None,
               decoder: str = "auto") -> torch.Tensor | None:
    """The per-pixel mean of the training images, computed on the CPU (so nvjpeg leaves it to torchvision)."""
    return pixel_mean(train, workers, "auto" if decoder == "nvjpeg" else decoder) if recipe.mean_subtract else None


class InputWatch:
    """Says once when training waits for its input: images/s of the data vs of the step.

    `watch(batches, say)` times each wait for a batch and the work between batches; after `skip`
    batches (start-up, compilation) it compares the medians of the next `window`.
    """

    def __init__(self, hint: str, skip: int = 5, window: int = 20) -> None:
        self.hint, self.skip, self.window = hint, skip, window
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.said = False

    def watch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              say: Callable[[str], None]) -> Iterator[tuple[torch.Tensor, ...]]:
        start = time.perf_counter()
        for batch in batches:
            fetched = time.perf_counter()
            yield batch
            done = time.perf_counter()
            self.record(fetched - start, done - fetched, len(batch[1]), say)
            start = done

    def record(self, wait: float, step: float, images: int, say: Callable[[str], None]) -> None:
        if self.said:
            return
        self.waits.append(wait)
        self.steps.append(step)
        if len(self.waits) < self.skip + self.window:
            return
        wait, step = (statistics.median(x[self.skip:]) for x in (self.waits, self.steps))
        self.waits, self.steps = [], []
        if wait > 0.1 * step:
            self.said = True
            say(f"input-bound: the data pipeline delivers {images / (wait + step):,.0f} images/s and the "
                     f"training step takes {images / step:,.0f} images/s, so the step waits "
                     f"{100 * wait / (wait + step):.0f}% of the time; {self.hint}")


def _first(dataset: Dataset, count: int) -> Dataset:
    return dataset.subset(torch.arange(min(count, len(dataset))))
