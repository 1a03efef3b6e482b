"""`resdsl.evaluate`: the top-1 and top-5 error of trained weights on a dataset's test split, as `resdsl eval`.

The weights' checkpoint says how they were trained: its recipe (dataset, crop, mean subtraction) and its
preprocessing record (mean, std, input, input format; see resdsl.weights.Preprocessing), read here exactly as
`resdsl.build` reads them. Nothing here prints or exits: bad arguments raise UsageError, missing data DataError,
unusable weights WeightsError, an absent device DeviceError, each with one sentence for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resdsl import zoo
from resdsl.data.locate import DECODERS, PROTOCOLS, DataError
from resdsl.deploy import load_network
from resdsl.diagnostics import SpecError
from resdsl.network import Network
from resdsl.resolve import UsageError, check_workers, is_source_text

if TYPE_CHECKING:
    import torch

    from resdsl.data import Dataset
    from resdsl.expr import Value
    from resdsl.recipe import Recipe
    from resdsl.weights import Preprocessing


@dataclass(frozen=True)
class EvalResult:
    """The error rates of `weights` (0-1; `top5_error` None with fewer than 5 classes) on `images` test images."""

    network: str
    weights: Path
    dataset: str
    split: str
    data: Path
    protocol: str
    input: tuple[int, ...]
    images: int
    classes: int
    top1_error: float
    top5_error: float | None


def evaluate(spec: str | Path | Network, weights: str | Path | None = None, *, protocol: str = "center",
             dataset: str | None = None, data: str | Path | None = None, batch: int = 500, limit: int | None = None,
             device: str | None = None, workers: int | None = None, decoder: str = "auto",
             params: dict[str, Value] | None = None, say: Callable[[str], None] = lambda line: None) -> EvalResult:
    """Evaluate `weights` (default for a run folder: its last.pt) of `spec` (a spec, zoo name, network or training
    run's folder) under `protocol` (center, 10crop, multiscale); `say` gets what it reads and recompiles."""
    check_options(protocol, decoder, batch, limit)
    workers = check_workers(workers)
    spec, weights = spec_and_weights(spec, weights)
    network = load_network(spec, params)

    import torch

    from resdsl.data import find_data, load_dataset
    from resdsl.data.images import check_named_decoder
    from resdsl.train.data import augmentation, fit_network, view_size
    from resdsl.train.distributed import setup
    from resdsl.train.evaluate import evaluate as score
    from resdsl.weights import WeightsError, load_weights, preprocessing, read_weights

    chosen = setup(device).device
    check_named_decoder(decoder, chosen)
    saved = read_weights(weights)
    recorded = preprocessing(saved)
    config = config_beside(weights)
    recipe = recipe_of(network, saved.checkpoint, config, dataset)
    root = find_data(recipe.dataset, Path(data) if data is not None else recorded_data(config))
    test = load_dataset(recipe.dataset, root, train=False)
    folder = test.shape is None
    if folder:
        test = test.sized(view_size(recipe, trained_input(recorded, config) or network.input_shape))
    if limit is not None:
        test = test.subset(torch.arange(min(limit, len(test))))
    spec_shape = network.input_shape
    network = fit_network(network, test, say)
    if protocol == "multiscale":
        check_fully_convolutional(network)
    model = network.to_torch(seed=0)
    load_weights(model, saved, network.name)
    mean = training_mean(recorded, recipe, weights, config, root, test, workers, decoder)
    prepare = augmentation(recipe, test, spec_shape, mean, chosen, std=recorded.std)
    say(f"reading {recipe.dataset} from {root.resolve()}")
    scores = score(model.to(chosen), test, chosen, prepare=prepare.eval, normalize=prepare.normalize,
                   protocol=protocol, batch=batch, workers=workers, decoder=decoder)
    if scores.non_finite:
        raise WeightsError(f"{network.name} with {weights} gives NaN or infinite outputs for {scores.non_finite:,} "
                           f"of {scores.images:,} images, so it has no error rate")
    return EvalResult(network=network.name, weights=weights, dataset=recipe.dataset, split="val" if folder else "test",
                      data=root.resolve(), protocol=protocol, input=tuple(network.input_shape), images=scores.images,
                      classes=test.classes, top1_error=scores.top1, top5_error=scores.top5)


def check_options(protocol: str, decoder: str, batch: int, limit: int | None) -> None:
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol takes {', '.join(PROTOCOLS)}, not '{protocol}'")
    if decoder not in DECODERS:
        raise UsageError(f"--decoder takes {', '.join(DECODERS)}, not '{decoder}'")
    if batch < 1 or (limit is not None and limit < 1):
        raise UsageError("--batch and --limit must be at least 1")


def spec_and_weights(spec: str | Path | Network, weights: str | Path | None) -> tuple[str | Network, Path]:
    """The spec to compile and the weights file: a run folder gives its spec.res and, by default, its last.pt."""
    if not isinstance(spec, Network) and not is_source_text(spec):
        run = Path(spec) if Path(spec).is_dir() else None
        if run is not None:
            if not (run / "spec.res").is_file():
                raise DataError(f"{run} is a folder but not a training run: it has no spec.res")
            spec = str(run / "spec.res")
            weights = weights or run / "last.pt"
        elif not Path(spec).exists() and zoo.find(str(spec)) is None:
            raise DataError(f"no such file or folder: {spec}")
    if weights is None:
        raise UsageError("give the weights to evaluate: --weights CKPT (or a run folder instead of a spec)")
    return (spec if isinstance(spec, Network) else str(spec)), Path(weights)


def trained_input(recorded: Preprocessing, config: dict[str, Any]) -> tuple[int, ...] | None:
    """The input the weights were trained on: the checkpoint's record, else its run's config.json."""
    if recorded.input is not None:
        return recorded.input
    shape = config.get("input")
    return tuple(shape) if isinstance(shape, list) else None


def training_mean(recorded: Preprocessing, recipe: Recipe, weights: Path, config: dict[str, Any], root: Path,
                  test: Dataset, workers: int | None, decoder: str) -> torch.Tensor | None:
    """The mean image training subtracted: the checkpoint's, its run's mean.pt, else computed again."""
    from resdsl.data import load_dataset
    from resdsl.data.images import ImageFiles
    from resdsl.train.data import mean_image

    if recorded.mean is not None or not recipe.mean_subtract:
        return recorded.mean
    mean = recorded_mean(weights, config)
    if mean is None:
        train = load_dataset(recipe.dataset, root, train=True)
        if isinstance(test.images, ImageFiles) and test.images.size is not None:  # an image folder: test's views
            train = train.sized(test.images.size)
        mean = mean_image(recipe, train, workers, decoder)
    return mean


def config_beside(weights: Path) -> dict[str, Any]:
    """The config.json of the run a checkpoint belongs to, if it sits beside it."""
    from resdsl.train.config import read_config_json

    try:
        return read_config_json(weights.parent / "config.json")
    except (OSError, ValueError):
        return {}


def recorded_mean(weights: Path, config: dict[str, Any]) -> torch.Tensor | None:
    """The mean image of the run a bare state_dict sits in (config.json names its file), if there is one."""
    from resdsl.weights import WeightsError, read_tensor_file, statistic_problem

    name = config.get("mean")
    path = weights.parent / name if isinstance(name, str) else None
    if path is None or not path.is_file():
        return None
    mean = read_tensor_file(path, "mean image")
    if (problem := statistic_problem(mean, "mean")) is not None:
        raise WeightsError(f"{path} holds a mean image that is {problem}")
    return mean


def recipe_of(network: Network, saved: dict[str, Any], config: dict[str, Any], dataset: str | None) -> Recipe:
    """The run's recipe: `dataset` over the checkpoint's recipe, over its run's config.json, over the spec's."""
    from resdsl.recipe import Recipe
    from resdsl.recipe import recipe_of as spec_recipe

    recorded = saved.get("recipe") if isinstance(saved.get("recipe"), dict) else config.get("recipe")
    if isinstance(recorded, dict):
        try:
            recipe = Recipe.from_json(recorded)
        except ValueError:
            recipe = None
        if recipe is not None:
            if dataset is None:
                return recipe
            return recipe.updated(dataset=spec_recipe(network.program, dataset_line(dataset)).dataset)
    return spec_recipe(network.program, dataset_line(dataset) if dataset else [])


def dataset_line(name: str) -> list[tuple[str, str]]:
    """`--dataset NAME` as the train section's `dataset` line, checked as the spec's would be."""
    return [("--dataset", f'dataset "{name}"')]


def recorded_data(config: dict[str, Any]) -> Path | None:
    """The --data a run was trained with, if it still names a directory from here."""
    data = config.get("data")
    return Path(data) if isinstance(data, str) and Path(data).is_dir() else None


def check_fully_convolutional(network: Network) -> None:
    """Multi-scale testing feeds whole images of other sizes: the network must accept them."""
    from resdsl.data.views import EvalView

    channels, size = network.input_shape[0], network.input_shape[-1]
    for side in (min(EvalView("multiscale", size).sides()), max(EvalView("multiscale", size).sides())):
        try:
            network.with_input((channels, side, side))
        except SpecError:
            raise DataError(f"multi-scale testing runs {network.name} on {side}x{side} images, and it takes only "
                            f"{'x'.join(map(str, network.input_shape))}: its head needs a global avgpool") from None
