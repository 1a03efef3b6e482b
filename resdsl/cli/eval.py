"""`resdsl eval SPEC --weights CKPT`: the test error of trained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import SetOption, fail, load_network
from resdsl.diagnostics import SpecError

PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


def evaluate(
    spec: Annotated[str, typer.Argument(help="A spec file (.res) or a zoo name.", show_default=False)],
    weights: Annotated[Path, typer.Option(help="A resdsl checkpoint (last.pt, best.pt) or a bare state_dict.",
                                          show_default=False)],
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the spec's).")] = None,
    data: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    batch: Annotated[int, typer.Option(help="Images per forward pass.")] = 500,
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if any).")] = None,
    set_: SetOption = None,
) -> None:
    """Print the error of WEIGHTS on the test split of the dataset."""
    if batch < 1 or (limit is not None and limit < 1):
        fail("--batch and --limit must be at least 1", 2)
    network = load_network(spec, set_)
    from resdsl.recipe import recipe_of

    try:
        recipe = recipe_of(network.program, [f'dataset "{dataset}"'] if dataset else [])
    except SpecError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None

    import torch

    from resdsl.data import DataError, find_data, load_dataset, pixel_mean
    from resdsl.train.checkpoint import CheckpointError, load
    from resdsl.train.data import augmentation, fit_network
    from resdsl.train.distributed import DeviceError, setup
    from resdsl.train.evaluate import error_rate

    try:
        chosen = setup(device).device
        saved = load(weights, required=())
        state = saved.get("model", saved)
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{weights} holds neither a state_dict nor a checkpoint with 'model'")
        root = find_data(recipe.dataset, data)
        test = load_dataset(recipe.dataset, root, train=False)
        if limit is not None:
            test = test.subset(torch.arange(min(limit, len(test))))
        spec_shape = network.input_shape
        network = fit_network(network, test, lambda line: typer.echo(line, err=True))
        model = network.to_torch()
        try:
            model.load_state_dict(_strip(state))
        except RuntimeError as error:
            reason = str(error).splitlines()[-1].strip()
            raise CheckpointError(f"{weights} does not fit {network.name}: {reason}") from None
        mean = saved.get("mean") if "model" in saved else None
        if mean is None and recipe.mean_subtract:
            mean = pixel_mean(load_dataset(recipe.dataset, root, train=True))
        prepare = augmentation(recipe, test, spec_shape, mean, chosen)
        error = error_rate(model.to(chosen), test, prepare.eval, chosen, batch=batch)
    except (CheckpointError, DataError, DeviceError) as problem:
        fail(str(problem))
    typer.echo(f"{network.name} on {recipe.dataset} test ({len(test):,} images): error {100 * error:.2f}%")


def _strip(state: dict) -> dict:
    for prefix in PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def register(app: typer.Typer) -> None:
    app.command(name="eval")(evaluate)
