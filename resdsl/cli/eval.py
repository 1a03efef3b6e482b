"""`resdsl eval SPEC --weights CKPT` or `resdsl eval RUN_DIR`: top-1 and top-5 error of trained weights.

The work is `resdsl.evaluation.evaluate`; this module turns the flags into its arguments and its result into text.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import SetOption, check_device, check_workers, complete_spec, fail, not_empty
from resdsl.resolve import parse_overrides

PROTOCOL_NAMES = {"center": "centre crop", "10crop": "10-crop", "multiscale": "multi-scale"}

SpecOrRunArgument = Annotated[str, typer.Argument(
    help="A spec file (.res), a zoo name, or a training run's folder.", autocompletion=complete_spec,
    parser=not_empty("SPEC", "a spec file, a zoo name or a run folder", str), show_default=False)]
WeightsOption = Annotated[Path | None, typer.Option(
    help="A resdsl checkpoint (last.pt, best.pt) or a bare state_dict (default for a run folder: its last.pt).",
    parser=not_empty("--weights", "a weights file"), show_default=False)]
ProtocolOption = Annotated[str, typer.Option(help="center, 10crop (4 corners + centre, and their mirrors) or "
                                             "multiscale (the whole image at 5 sizes, fully convolutional).")]
DatasetOption = Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's, else the spec's).")]
DataOption = Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.",
                                                 parser=not_empty("--data", "the dataset's folder"))]
BatchOption = Annotated[int, typer.Option(help="Views per forward pass.")]
LimitOption = Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda if any).",
                                                  callback=check_device)]
WorkersOption = Annotated[int | None, typer.Option(help="Image folders: decoding processes (default: the CPUs).",
                                                   callback=check_workers, show_default=False)]
DecoderOption = Annotated[str, typer.Option(help="Image folders: auto, torchvision, pil or nvjpeg.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def evaluate(spec: SpecOrRunArgument, weights: WeightsOption = None, protocol: ProtocolOption = "center",
             dataset: DatasetOption = None, data: DataOption = None, batch: BatchOption = 500,
             limit: LimitOption = None, device: DeviceOption = None, workers: WorkersOption = None,
             decoder: DecoderOption = "auto", as_json: JsonOption = False, set_: SetOption = None) -> None:
    """Print the top-1 and top-5 error of WEIGHTS on the test split (an image folder's val/) of the dataset."""
    from resdsl.data import DataError
    from resdsl.evaluation import evaluate as score
    from resdsl.train.distributed import DeviceError
    from resdsl.weights import WeightsError

    try:
        result = score(spec, weights, protocol=protocol, dataset=dataset, data=data, batch=batch, limit=limit,
                       device=device, workers=workers, decoder=decoder,
                       params=parse_overrides(set_),
                       say=lambda line: typer.echo(line, err=True))
    except (WeightsError, DataError, DeviceError) as problem:
        fail(str(problem))
    if result.top5_error is None:
        typer.echo(f"top-5 error skipped: {result.dataset} has {result.classes} classes, fewer than 5", err=True)
    if as_json:
        fields = {key: value for key, value in asdict(result).items() if key != "classes"}
        typer.echo(json.dumps({**fields, "weights": str(result.weights), "data": str(result.data),
                               "input": list(result.input)}, indent=2))
        return
    top5 = f", top-5 error {100 * result.top5_error:.2f}%" if result.top5_error is not None else ""
    typer.echo(f"{result.network} on {result.dataset} {result.split} ({result.images:,} images, "
               f"{PROTOCOL_NAMES[result.protocol]}): top-1 error {100 * result.top1_error:.2f}%{top5}")


def register(app: typer.Typer) -> None:
    app.command(name="eval")(evaluate)
