"""`resdsl build FILE --backend B -o OUT`: a deployable artifact built from a spec and, optionally, its weights.

The work is `resdsl.deploy.build`; this module turns the flags into its arguments and its result into one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from resdsl.backends import BACKENDS, BackendUnavailable, Unsupported
from resdsl.cli.common import CalibrationDatasetOption, SetOption, SpecArgument, check_seed, fail, not_empty, quoted
from resdsl.deploy import BuildError, BuildResult
from resdsl.limits import human_bytes
from resdsl.quantization import HELDOUT_IMAGES, MAX_DROP
from resdsl.resolve import parse_overrides

MAX_DIGITS = 9  # of a size on the command line: larger is refused before int() meets Python's digit limit

InputOption = Annotated[str | None, typer.Option("--input", metavar="CxHxW",
                                                 help="Build for another input size, e.g. 3x64x64.")]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32, fp16 or bf16 (int8 is refused, see docs).")]
BackendOption = Annotated[str, typer.Option("--backend", help=f"One of {', '.join(BACKENDS)}.", show_default=False)]
OutputOption = Annotated[Path, typer.Option("-o", "--output", help="The artifact to write.", show_default=False,
                                            parser=not_empty("-o", "the artifact's file name"))]
WeightsOption = Annotated[Path | None, typer.Option("--weights", help="A resdsl checkpoint or a state_dict.",
                                                    parser=not_empty("--weights", "a weights file"))]
BatchOption = Annotated[int | None, typer.Option("--batch", help="A fixed batch size (default 1).")]
DynamicBatchOption = Annotated[str | None, typer.Option(
    "--dynamic-batch", metavar="MIN:OPT:MAX", help="A dynamic batch range and the size to optimise for.")]
NoFoldOption = Annotated[bool, typer.Option(
    "--no-fold", help="Keep the training graph: no BatchNorm folding, no merging of parallel branches.")]
InputFormatOption = Annotated[str, typer.Option(
    "--input-format", help="What the artifact takes: float images in 0-1 or uint8 images in 0-255 (NCHW).")]
RawInputOption = Annotated[bool, typer.Option(
    "--raw-input", help="Leave the input normalisation out: the artifact takes the network's own input.")]
MeanOption = Annotated[str | None, typer.Option(
    "--mean", metavar="M1,M2,..", help="Per-channel mean in 0-1 units to bake in (instead of the weights').")]
StdOption = Annotated[str | None, typer.Option(
    "--std", metavar="S1,S2,..", help="Per-channel std in 0-1 units to bake in (instead of the weights').")]
FeaturesOption = Annotated[str | None, typer.Option(
    "--features", metavar="NAME,NAME,..", help="Output these layers or groups (e.g. layer2,layer3,layer4) "
                                               "instead of the network's output: a backbone.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the initialisation when no --weights.",
                                         callback=check_seed)]
NoVerifyOption = Annotated[bool, typer.Option(
    "--no-verify", help="Write the artifact even if its output is not within the tolerance of PyTorch's "
                        "(see docs/deploy.md).")]
Int8Option = Annotated[bool, typer.Option(
    "--int8", help="Quantise the OpenVINO IR to INT8 with NNCF (needs --calibration); its held-out top-1 error is "
                   "reported beside the fp32 one's.")]
CalibrationOption = Annotated[Path | None, typer.Option(
    "--calibration", metavar="DATA", help="The dataset folder (as eval's --data) whose training images calibrate "
                                         "--int8 and whose test images check it.",
    parser=not_empty("--calibration", "a dataset folder"))]
Int8MaxDropOption = Annotated[float, typer.Option(
    "--int8-max-drop", metavar="POINTS", help="Refuse the INT8 artifact if its top-1 error exceeds the fp32 one's "
                                              "by more than this many points.")]
Int8ImagesOption = Annotated[int, typer.Option(
    "--int8-images", help="Held-out test images --int8 is checked on, spread evenly over the test split.")]


def build(spec: SpecArgument, backend: BackendOption, output: OutputOption, weights: WeightsOption = None,
          precision: PrecisionOption = "fp32", batch: BatchOption = None, dynamic_batch: DynamicBatchOption = None,
          no_fold: NoFoldOption = False, input_: InputOption = None, input_format: InputFormatOption = "float",
          raw_input: RawInputOption = False, mean: MeanOption = None, std: StdOption = None,
          features: FeaturesOption = None, seed: SeedOption = 0, no_verify: NoVerifyOption = False,
          int8: Int8Option = False, calibration: CalibrationOption = None, int8_max_drop: Int8MaxDropOption = MAX_DROP,
          int8_images: Int8ImagesOption = HELDOUT_IMAGES, dataset: CalibrationDatasetOption = None,
          set_: SetOption = None) -> None:
    """Write an exported program, ONNX file, TorchScript module, OpenVINO IR or TensorRT engine, and check it
    against PyTorch."""
    from resdsl.data import DataError
    from resdsl.deploy import build as build_artifact
    from resdsl.weights import WeightsError

    try:
        result = build_artifact(
            spec, backend, output, params=parse_overrides(set_), weights=weights,
            precision=precision, batch=batch_size(batch, dynamic_batch), fold=not no_fold,
            input_shape=input_shape(input_), input_format=input_format, raw_input=raw_input,
            mean=floats("--mean", mean), std=floats("--std", std), features=feature_names(features), seed=seed,
            verify=not no_verify, int8=int8, calibration=calibration, int8_max_drop=int8_max_drop,
            int8_images=int8_images, dataset=dataset)
    except (BuildError, WeightsError, BackendUnavailable, Unsupported, DataError) as error:
        fail(str(error))
    typer.echo(f"{backend}: {result.path} ({human_bytes(result.size)}), {result.precision}, {result.batch}, "
               f"{'BN folded' if result.folded else 'BN kept'}, {result.contract.describe()}; {checked(result)}"
               f"{' (not verified: --no-verify)' * no_verify}")
    if result.int8 is not None:
        typer.echo(f"int8: {result.int8.describe()}")


def checked(result: BuildResult) -> str:
    if not result.errors:
        return f"checked with {result.checked_with}"
    e = result.errors
    if not result.reference_finite:
        return f"loaded with {result.checked_with}, but the outputs are not finite with these weights"
    quantised = "the fp32 IR it was quantised from " if result.int8 is not None else ""
    return (f"{quantised}checked with {result.checked_with}: max abs err {e['max_abs']:.2e}, "
            f"max rel err {e['max_rel']:.2e}, cosine {e['cosine']:.6f}")


def whole_numbers(text: str, separator: str) -> list[int] | None:
    """`text` split at `separator` into whole numbers (ASCII digits, at most MAX_DIGITS each), or None."""
    parts = text.strip().split(separator)
    if not all(re.fullmatch(rf"[0-9]{{1,{MAX_DIGITS}}}", p.strip()) for p in parts):
        return None
    return [int(p) for p in parts]


def batch_size(batch: int | None, dynamic: str | None) -> int | tuple[int, int, int]:
    """`--batch N` or `--dynamic-batch MIN:OPT:MAX` as resdsl.deploy.build takes it (exit 2 on bad values)."""
    if batch is not None and dynamic is not None:
        fail("give either --batch or --dynamic-batch, not both", 2)
    if dynamic is None:
        return 1 if batch is None else batch
    parts = whole_numbers(dynamic, ":")
    if parts is None or len(parts) != 3:
        fail(f"--dynamic-batch takes MIN:OPT:MAX, three whole numbers such as 1:8:32, not {quoted(dynamic)}", 2)
    return parts[0], parts[1], parts[2]


def input_shape(shape: str | None) -> tuple[int, int, int] | None:
    """`--input CxHxW` as a shape (exit 2 unless three positive whole numbers)."""
    if shape is None:
        return None
    dims = whole_numbers(shape.lower(), "x")
    if dims is None or len(dims) != 3 or 0 in dims:
        fail(f"--input takes CxHxW, three positive whole numbers such as 3x64x64, not {quoted(shape)}", 2)
    return dims[0], dims[1], dims[2]


def floats(flag: str, text: str | None) -> list[float] | None:
    """`--mean 0.485,0.456,0.406` as numbers, comma-separated (exit 2 otherwise; the library checks their values)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        fail(f"{flag} takes one number per channel, comma-separated, such as 0.485,0.456,0.406, not {quoted(text)}", 2)


def feature_names(text: str | None) -> list[str] | None:
    """`--features layer2,layer3` as a list (exit 2 when empty or when a name repeats)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        fail(f"--features takes layer or group names separated by commas, such as layer2,layer3,layer4, not "
             f"{quoted(text)}", 2)
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        fail(f"--features names {', '.join(repeated)} more than once; give each layer once", 2)
    return names


def register(app: typer.Typer) -> None:
    app.command("build")(build)
