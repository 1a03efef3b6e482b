"""`resdsl eval SPEC --weights CKPT` or `resdsl eval RUN_DIR`: top-1 and top-5 error of trained weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from resdsl import zoo
from resdsl.cli.common import SetOption, check_device, check_workers, complete_spec, fail, load_network, not_empty
from resdsl.diagnostics import SpecError

PROTOCOL_NAMES = {"center": "centre crop", "10crop": "10-crop", "multiscale": "multi-scale"}


def evaluate(
    spec: Annotated[str, typer.Argument(help="A spec file (.res), a zoo name, or a training run's folder.",
                                        parser=not_empty("SPEC", "a spec file, a zoo name or a run folder", str),
                                        autocompletion=complete_spec, show_default=False)],
    weights: Annotated[Path | None, typer.Option(help="A resdsl checkpoint (last.pt, best.pt) or a bare "
                                                 "state_dict (default for a run folder: its last.pt).",
                                                 parser=not_empty("--weights", "a weights file"),
                                                 show_default=False)] = None,
    protocol: Annotated[str, typer.Option(help="center, 10crop (4 corners + centre, and their mirrors) or "
                                          "multiscale (the whole image at 5 sizes, fully convolutional).")] = "center",
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's, else the spec's).")] = None,
    data: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.",
                                              parser=not_empty("--data", "the dataset's folder"))] = None,
    batch: Annotated[int, typer.Option(help="Views per forward pass.")] = 500,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if any).",
                                               callback=check_device)] = None,
    workers: Annotated[int | None, typer.Option(help="Image folders: decoding processes (default: the CPUs).",
                                                callback=check_workers, show_default=False)] = None,
    decoder: Annotated[str, typer.Option(help="Image folders: auto, torchvision, pil or nvjpeg.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    set_: SetOption = None,
) -> None:
    """Print the top-1 and top-5 error of WEIGHTS on the test split (an image folder's val/) of the dataset."""
    from resdsl.data.locate import DECODERS, PROTOCOLS

    if protocol not in PROTOCOLS:
        fail(f"--protocol takes {', '.join(PROTOCOLS)}, not '{protocol}'", 2)
    if decoder not in DECODERS:
        fail(f"--decoder takes {', '.join(DECODERS)}, not '{decoder}'", 2)
    if batch < 1 or (limit is not None and limit < 1):
        fail("--batch and --limit must be at least 1", 2)
    run = Path(spec) if Path(spec).is_dir() else None
    if run is not None:
        if not (run / "spec.res").is_file():
            fail(f"{run} is a folder but not a training run: it has no spec.res")
        spec = str(run / "spec.res")
        weights = weights or run / "last.pt"
    elif not Path(spec).exists() and zoo.find(spec) is None:
        fail(f"no such file or folder: {spec}")
    if weights is None:
        fail("give the weights to evaluate: --weights CKPT (or a run folder instead of a spec)", 2)
    network = load_network(spec, set_)

    import torch

    from resdsl.data import DataError, find_data, load_dataset
    from resdsl.data.images import check_named_decoder
    from resdsl.train.data import augmentation, fit_network, mean_image, view_size
    from resdsl.train.distributed import DeviceError, setup
    from resdsl.train.evaluate import evaluate as score
    from resdsl.weights import WeightsError, load_weights, preprocessing, read_weights

    try:
        chosen = setup(device).device
        check_named_decoder(decoder, chosen)
        saved = read_weights(weights)
        recorded = preprocessing(saved)
        config = _config_beside(weights)
        recipe = _recipe(network, saved.checkpoint, config, dataset)
        root = find_data(recipe.dataset, data if data is not None else _recorded_data(config))
        test = load_dataset(recipe.dataset, root, train=False)
        trained_input = tuple(config["input"]) if isinstance(config.get("input"), list) else network.input_shape
        folder = test.shape is None
        if folder:
            test = test.sized(view_size(recipe, trained_input))
        if limit is not None:
            test = test.subset(torch.arange(min(limit, len(test))))
        spec_shape = network.input_shape
        network = fit_network(network, test, lambda line: typer.echo(line, err=True))
        if protocol == "multiscale":
            _check_fully_convolutional(network)
        model = network.to_torch(seed=0)
        load_weights(model, saved, network.name)
        mean = recorded.mean
        if mean is None and recipe.mean_subtract:
            mean = _recorded_mean(weights, config)
            if mean is None:
                train = load_dataset(recipe.dataset, root, train=True)
                mean = mean_image(recipe, train.sized(test.images.size) if folder else train, workers, decoder)
        prepare = augmentation(recipe, test, spec_shape, mean, chosen, std=recorded.std)
        typer.echo(f"reading {recipe.dataset} from {root.resolve()}", err=True)
        scores = score(model.to(chosen), test, chosen, prepare=prepare.eval, normalize=prepare.normalize,
                       protocol=protocol, batch=batch, workers=workers, decoder=decoder)
        if scores.non_finite:
            raise WeightsError(f"{network.name} with {weights} gives NaN or infinite outputs for {scores.non_finite:,} "
                               f"of {scores.images:,} images, so it has no error rate")
    except (WeightsError, DataError, DeviceError) as problem:
        fail(str(problem))
    split = "val" if folder else "test"
    if scores.top5 is None:
        typer.echo(f"top-5 error skipped: {recipe.dataset} has {test.classes} classes, fewer than 5", err=True)
    if as_json:
        typer.echo(json.dumps({
            "network": network.name, "weights": str(weights), "dataset": recipe.dataset, "split": split,
            "data": str(root.resolve()), "protocol": protocol, "input": list(network.input_shape),
            "images": scores.images, "top1_error": scores.top1, "top5_error": scores.top5}, indent=2))
        return
    top5 = f", top-5 error {100 * scores.top5:.2f}%" if scores.top5 is not None else ""
    typer.echo(f"{network.name} on {recipe.dataset} {split} ({scores.images:,} images, {PROTOCOL_NAMES[protocol]}): "
               f"top-1 error {100 * scores.top1:.2f}%{top5}")


def _config_beside(weights: Path) -> dict:
    """The config.json of the run a checkpoint belongs to, if it sits beside it."""
    from resdsl.train.config import read_config_json

    try:
        return read_config_json(weights.parent / "config.json")
    except (OSError, ValueError):
        return {}


def _recorded_mean(weights: Path, config: dict):
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


def _recipe(network, saved: dict, config: dict, dataset: str | None):
    """The run's recipe: --dataset over the checkpoint's recipe, over its run's config.json, over the spec's."""
    from resdsl.recipe import Recipe, recipe_of

    recorded = saved.get("recipe") if isinstance(saved.get("recipe"), dict) else config.get("recipe")
    if isinstance(recorded, dict):
        try:
            recipe = Recipe.model_validate(recorded)
        except ValueError:
            recipe = None
        if recipe is not None:
            return recipe if dataset is None else recipe.model_copy(update={"dataset": _dataset(network, dataset)})
    return recipe_of(network.program, [("--dataset", f'dataset "{dataset}"')] if dataset else [])


def _dataset(network, name: str) -> str:
    """`name` checked as the train section's `dataset` line would be."""
    from resdsl.recipe import recipe_of

    return recipe_of(network.program, [("--dataset", f'dataset "{name}"')]).dataset


def _recorded_data(config: dict) -> Path | None:
    """The --data a run was trained with, if it still names a directory from here."""
    data = config.get("data")
    return Path(data) if isinstance(data, str) and Path(data).is_dir() else None


def _check_fully_convolutional(network) -> None:
    """Multi-scale testing feeds whole images of other sizes: the network must accept them."""
    from resdsl.data import DataError
    from resdsl.data.views import EvalView

    channels, size = network.input_shape[0], network.input_shape[-1]
    for side in (min(EvalView("multiscale", size).sides()), max(EvalView("multiscale", size).sides())):
        try:
            network.with_input((channels, side, side))
        except SpecError:
            raise DataError(f"multi-scale testing runs {network.name} on {side}x{side} images, and it takes only "
                            f"{'x'.join(map(str, network.input_shape))}: its head needs a global avgpool") from None


def register(app: typer.Typer) -> None:
    app.command(name="eval")(evaluate)
