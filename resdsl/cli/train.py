"""`resdsl train SPEC`: train a network on its spec's recipe, every setting overridable by a flag.

The work is `resdsl.training.train`; this module turns the flags into its arguments. The recipe flags (one per
setting) come from resdsl.recipe.SETTINGS.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import SetOption, SpecArgument, check_device, check_seed, check_workers, fail, not_empty
from resdsl.resolve import parse_overrides

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
    command.__signature__ = inspect.Signature(params[:at] + options + params[at:])  # pyright: ignore[reportFunctionMemberAccess]
    return command


def _option(key: str, help: str, flag: type) -> typer.models.OptionInfo:
    if flag is bool:
        name = key.replace("_", "-")
        return typer.Option(f"--{name}/--no-{name}", help=help, rich_help_panel=RECIPE, show_default=False)
    return typer.Option(help=help, rich_help_panel=RECIPE)


DataOption = Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.",
                                                 parser=not_empty("--data", "the dataset's folder"))]
OutOption = Annotated[Path | None, typer.Option(help="Run directory (default runs/<network>).",
                                                parser=not_empty("--out", "a folder"))]
RecipeOption = Annotated[list[str] | None, typer.Option(metavar="LINE", rich_help_panel=RECIPE,
                                                        help='Any train-section line, e.g. "lr 0.05".')]
SeedOption = Annotated[int, typer.Option(help="Seed of initialisation, order and augmentation.", callback=check_seed,
                                         rich_help_panel=RUN)]
CheckpointEveryOption = Annotated[int, typer.Option(help="Write last.pt every N iterations.", rich_help_panel=RUN)]
EvalEveryOption = Annotated[int, typer.Option(help="Evaluate every N iterations.", rich_help_panel=RUN)]
LogEveryOption = Annotated[int, typer.Option(help="Log a metrics line every N iterations.", rich_help_panel=RUN)]
ResumeOption = Annotated[bool, typer.Option(help="Continue the run in --out from its last.pt (it may be made "
                                                 "longer).", rich_help_panel=RUN)]
WeightsOption = Annotated[Path | None, typer.Option(help="Start from these weights: a resdsl checkpoint or a "
                                                         "state_dict (torchvision, timm names).", rich_help_panel=RUN,
                                                    parser=not_empty("--weights", "a weights file"))]
StrictOption = Annotated[bool, typer.Option(help="With --weights, refuse a last layer of another size instead of "
                                                 "re-initialising it.", rich_help_panel=RUN)]
TensorboardOption = Annotated[bool, typer.Option(help="Also log the metrics for TensorBoard, into --out.",
                                                 rich_help_panel=RUN)]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if any).",
                                                  callback=check_device, rich_help_panel=RUN)]
AmpOption = Annotated[str | None, typer.Option(help="Autocast to bf16 or fp16.", rich_help_panel=RUN)]
CompileOption = Annotated[bool, typer.Option("--compile", help="torch.compile the model.", rich_help_panel=RUN)]
SyncBnOption = Annotated[bool, typer.Option(help="SyncBatchNorm across processes.", rich_help_panel=RUN)]
ZeroInitOption = Annotated[bool, typer.Option(help="Zero the last BN of each residual branch.", rich_help_panel=RUN)]
LimitTrainOption = Annotated[int | None, typer.Option(help="Train on the first N images only.", rich_help_panel=RUN)]
LimitEvalOption = Annotated[int | None, typer.Option(help="Evaluate on the first N images only.",
                                                     rich_help_panel=RUN)]
WorkersOption = Annotated[int | None, typer.Option(help="Image folders: decoding processes per GPU (default: the "
                                                        "CPUs per GPU; 0 decodes in the training process).",
                                                   callback=check_workers, rich_help_panel=RUN, show_default=False)]
DecoderOption = Annotated[str, typer.Option(help="Image folders: auto (torchvision, else PIL), torchvision, pil, "
                                                 "or nvjpeg (batched on the GPU).", rich_help_panel=RUN)]
DivergenceOption = Annotated[bool, typer.Option("--divergence-check/--no-divergence-check",
                                                help="Stop when the loss becomes non-finite or rises far above its "
                                                     "start after the warm-up.", rich_help_panel=RUN)]


@recipe_options
def train(spec: SpecArgument, data: DataOption = None, out: OutOption = None, recipe: RecipeOption = None,
          seed: SeedOption = 0, checkpoint_every: CheckpointEveryOption = 1000, eval_every: EvalEveryOption = 1000,
          log_every: LogEveryOption = 50, resume: ResumeOption = False, weights: WeightsOption = None,
          strict: StrictOption = False, tensorboard: TensorboardOption = False, device: DeviceOption = None,
          amp: AmpOption = None, compile_: CompileOption = False, sync_bn: SyncBnOption = False,
          zero_init_residual: ZeroInitOption = False, limit_train: LimitTrainOption = None,
          limit_eval: LimitEvalOption = None, workers: WorkersOption = None, decoder: DecoderOption = "auto",
          divergence_check: DivergenceOption = True, set_: SetOption = None,
          **settings: object) -> None:  # one --KEY per recipe setting, declared by `recipe_options`
    """Train SPEC with the recipe of its train section; writes metrics.jsonl and checkpoints to --out."""
    from resdsl.data import DataError
    from resdsl.train import RunError
    from resdsl.train.checkpoint import CheckpointError
    from resdsl.train.distributed import DeviceError
    from resdsl.training import train as run

    try:
        result = run(spec, out=out, data=data, settings=settings, recipe=recipe or [],
                     params=parse_overrides(set_), seed=seed,
                     checkpoint_every=checkpoint_every, eval_every=eval_every, log_every=log_every, resume=resume,
                     weights=weights, strict=strict, tensorboard=tensorboard, device=device, amp=amp,
                     compile=compile_, sync_bn=sync_bn, zero_init_residual=zero_init_residual,
                     limit_train=limit_train, limit_eval=limit_eval, workers=workers, decoder=decoder,
                     divergence_check=divergence_check)
    except (DataError, RunError, CheckpointError, DeviceError) as error:
        fail(str(error))
    raise typer.Exit(result.status)


def register(app: typer.Typer) -> None:
    app.command(name="train")(train)
