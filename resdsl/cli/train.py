"""`resdsl train SPEC`: train a network on its spec's recipe, every setting overridable by a flag."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import (
    SetOption,
    SpecArgument,
    check_device,
    check_seed,
    check_workers,
    fail,
    load_network,
    not_empty,
)

RECIPE = "Recipe (overrides the spec's train section)"
RUN = "Run"


def recipe_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` as typer sees it: its `**settings` replaced by one `--KEY` option per recipe setting (declared by
    resdsl.recipe.SETTINGS), placed before its `recipe` parameter."""
    from resdsl.recipe import SETTINGS

    options = [inspect.Parameter(key, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                 annotation=Annotated[setting.flag | None, _option(key, setting.help, setting.flag)])
               for key, setting in SETTINGS.items()]
    params = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    at = next(i for i, p in enumerate(params) if p.name == "recipe")
    command.__signature__ = inspect.Signature(params[:at] + options + params[at:])  # type: ignore[attr-defined]
    return command


def _option(key: str, help: str, flag: type) -> typer.models.OptionInfo:
    if flag is bool:
        name = key.replace("_", "-")
        return typer.Option(f"--{name}/--no-{name}", help=help, rich_help_panel=RECIPE, show_default=False)
    return typer.Option(help=help, rich_help_panel=RECIPE)


@recipe_options
def train(
    spec: SpecArgument,
    data: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.",
                                              parser=not_empty("--data", "the dataset's folder"))] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<network>).",
                                             parser=not_empty("--out", "a folder"))] = None,
    recipe: Annotated[list[str] | None, typer.Option(metavar="LINE", rich_help_panel=RECIPE,
                                                     help='Any train-section line, e.g. "lr 0.05".')] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, order and augmentation.", callback=check_seed,
                                      rich_help_panel=RUN)] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Write last.pt every N iterations.",
                                                  rich_help_panel=RUN)] = 1000,
    eval_every: Annotated[int, typer.Option(help="Evaluate every N iterations.", rich_help_panel=RUN)] = 1000,
    log_every: Annotated[int, typer.Option(help="Log a metrics line every N iterations.", rich_help_panel=RUN)] = 50,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last.pt (it may be made longer).",
                                         rich_help_panel=RUN)] = False,
    weights: Annotated[Path | None, typer.Option(help="Start from these weights: a resdsl checkpoint or a state_dict "
                                                      "(torchvision, timm names).", rich_help_panel=RUN,
                                                 parser=not_empty("--weights", "a weights file"))] = None,
    strict: Annotated[bool, typer.Option(help="With --weights, refuse a last layer of another size instead of "
                                              "re-initialising it.", rich_help_panel=RUN)] = False,
    tensorboard: Annotated[bool, typer.Option(help="Also log the metrics for TensorBoard, into --out.",
                                              rich_help_panel=RUN)] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if any).",
                                               callback=check_device, rich_help_panel=RUN)] = None,
    amp: Annotated[str | None, typer.Option(help="Autocast to bf16 or fp16.", rich_help_panel=RUN)] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=RUN)] = False,
    sync_bn: Annotated[bool, typer.Option(help="SyncBatchNorm across processes.", rich_help_panel=RUN)] = False,
    zero_init_residual: Annotated[bool, typer.Option(help="Zero the last BN of each residual branch.",
                                                     rich_help_panel=RUN)] = False,
    limit_train: Annotated[int | None, typer.Option(help="Train on the first N images only.",
                                                    rich_help_panel=RUN)] = None,
    limit_eval: Annotated[int | None, typer.Option(help="Evaluate on the first N images only.",
                                                   rich_help_panel=RUN)] = None,
    workers: Annotated[int | None, typer.Option(help="Image folders: decoding processes per GPU "
                                                "(default: the CPUs per GPU; 0 decodes in the training process).",
                                                callback=check_workers, rich_help_panel=RUN,
                                                show_default=False)] = None,
    decoder: Annotated[str, typer.Option(help="Image folders: auto (torchvision, else PIL), torchvision, pil, "
                                         "or nvjpeg (batched on the GPU).", rich_help_panel=RUN)] = "auto",
    divergence_check: Annotated[bool, typer.Option("--divergence-check/--no-divergence-check",
                                                   help="Stop when the loss becomes non-finite or rises far above "
                                                        "its start after the warm-up.", rich_help_panel=RUN)] = True,
    set_: SetOption = None,
    **settings: object,  # one --KEY per recipe setting, declared by `recipe_options`
) -> None:
    """Train SPEC with the recipe of its train section; writes metrics.jsonl and checkpoints to --out."""
    if settings["iterations"] is not None and settings["epochs"] is not None:
        fail("give either --iterations or --epochs, not both", 2)
    if amp not in (None, "bf16", "fp16"):
        fail(f"--amp takes bf16 or fp16, not '{amp}'", 2)
    if weights is not None and resume:
        fail("--weights starts a new run from weights and --resume continues a run from its last.pt; give one", 2)
    if strict and weights is None:
        fail("--strict applies to --weights, which is not given", 2)
    from resdsl.data.locate import DECODERS

    if decoder not in DECODERS:
        fail(f"--decoder takes {', '.join(DECODERS)}, not '{decoder}'", 2)
    for name, value in (("--checkpoint-every", checkpoint_every), ("--eval-every", eval_every),
                        ("--log-every", log_every), ("--limit-train", limit_train), ("--limit-eval", limit_eval)):
        if value is not None and value < 1:
            fail(f"{name} must be at least 1, not {value}", 2)
    from resdsl.recipe import SETTINGS

    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{key.replace('_', '-')} must be a finite number, not {value}", 2)
    lines = [(f"--{key.replace('_', '-')}", SETTINGS[key].line(value)) for key, value in settings.items()
             if value is not None]
    lines += [("--recipe", line) for line in recipe or []]

    network = load_network(spec, set_)
    from resdsl.recipe import recipe_of

    run_recipe = recipe_of(network.program, lines)  # a bad setting is a SpecError, reported by the CLI

    from resdsl.data import DataError
    from resdsl.train import RunConfig, RunError, run
    from resdsl.train.checkpoint import CheckpointError
    from resdsl.train.distributed import DeviceError

    config = RunConfig(recipe=run_recipe, out=out or Path("runs") / network.name, data=data, seed=seed,
                       device=device, amp=amp, compile=compile_, sync_bn=sync_bn,
                       zero_init_residual=zero_init_residual, checkpoint_every=checkpoint_every,
                       eval_every=eval_every, log_every=log_every, limit_train=limit_train,
                       limit_eval=limit_eval, resume=resume, weights=weights, strict=strict, tensorboard=tensorboard,
                       workers=workers, decoder=decoder, divergence_check=divergence_check)
    try:
        status = run(network, config)
    except (DataError, RunError, CheckpointError, DeviceError) as error:
        fail(str(error))
    raise typer.Exit(status)


def register(app: typer.Typer) -> None:
    app.command(name="train")(train)
