"""The run's data: the recipe's dataset found, split, trimmed, and the network fitted to its shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from resdsl.data import Augment, DataError, Dataset, find_data, load_dataset, pixel_mean, split
from resdsl.network import Network
from resdsl.recipe import Recipe


@dataclass
class RunData:
    train: Dataset
    val: Dataset | None
    test: Dataset


def prepare(recipe: Recipe, data_dir, seed: int, limit_train: int | None, limit_eval: int | None) -> RunData:
    """Train/val/test of the recipe's dataset; the split and limits keep the first images of each part."""
    root = find_data(recipe.dataset, data_dir)
    full = load_dataset(recipe.dataset, root, train=True)
    test = load_dataset(recipe.dataset, root, train=False)
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
    return RunData(train, val, test)


def fit_network(network: Network, data: Dataset, say: Callable[[str], None]) -> Network:
    """`network` re-checked for the data's image shape if it differs; DataError if the classes do not match."""
    if tuple(data.shape) != tuple(network.input_shape):
        old = "x".join(map(str, network.input_shape))
        network = network.with_input(tuple(data.shape))
        say(f"{network.name}: recompiled for {data.name}'s {'x'.join(map(str, data.shape))} images "
            f"(the spec says {old})")
    outputs = network.output_shape[0] if len(network.output_shape) == 1 else None
    if outputs != data.classes:
        raise DataError(f"{network.name} has {'x'.join(map(str, network.output_shape))} outputs but {data.name} "
                        f"has {data.classes} classes; change the spec's last linear layer")
    return network


def augmentation(recipe: Recipe, data: Dataset, spec_shape: tuple[int, ...], mean: torch.Tensor | None,
                 device: torch.device) -> Augment:
    """The recipe's augmentation; a crop of the spec's input size follows the net to the data's size."""
    options = recipe.augment
    mean = mean.to(device) if mean is not None else None
    if options is None:
        return Augment(mean=mean)
    crop = options.crop or data.shape[-1]
    if options.scale is None and crop == spec_shape[-1] and data.shape[-1] != spec_shape[-1]:
        crop = data.shape[-1]
    return Augment(pad=options.pad, crop=crop, flip=options.flip, mean=mean, scale=options.scale)


def mean_image(recipe: Recipe, train: Dataset) -> torch.Tensor | None:
    return pixel_mean(train) if recipe.mean_subtract else None


def _first(dataset: Dataset, count: int) -> Dataset:
    return dataset.subset(torch.arange(min(count, len(dataset))))
