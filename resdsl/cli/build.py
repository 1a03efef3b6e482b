"""`resdsl build FILE --backend B -o OUT`: a deployable artifact built from a spec and, optionally, its weights."""

from __future__ import annotations

import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resdsl import zoo
from resdsl.backends import (
    BACKENDS,
    INPUT_FORMATS,
    PRECISIONS,
    BackendUnavailable,
    BatchProfile,
    BuildReport,
    Unsupported,
    WriteFailed,
    load_backend,
    tolerance,
)
from resdsl.backends.staging import move_into_place, staging_folder
from resdsl.cli.common import (
    SetOption,
    SpecArgument,
    check_seed,
    fail,
    human_bytes,
    load_network,
    not_an_input,
    not_empty,
    output_file,
    quoted,
)
from resdsl.diagnostics import SpecError
from resdsl.network import Network

if TYPE_CHECKING:
    from types import ModuleType

    import torch

    from resdsl.backends.preprocess import InputContract, Normalization
    from resdsl.weights import Weights

INT8 = ("--precision int8 is not supported: TensorRT 11 dropped implicit INT8 calibration, so quantize the model "
        "with NVIDIA ModelOpt (explicit Q/DQ nodes) and build that instead")
MAX_DIGITS = 9  # of a size on the command line: larger is refused before int() meets Python's digit limit

InputOption = Annotated[str | None, typer.Option("--input", metavar="CxHxW",
                                                 help="Build for another input size, e.g. 3x64x64.")]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32, fp16 or bf16 (int8 is refused, see docs).")]


def build(
    spec: SpecArgument,
    backend: Annotated[str, typer.Option("--backend", help=f"One of {', '.join(BACKENDS)}.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The artifact to write.", show_default=False,
                                         parser=not_empty("-o", "the artifact's file name"))],
    weights: Annotated[Path | None, typer.Option("--weights", help="A resdsl checkpoint or a state_dict.",
                                                 parser=not_empty("--weights", "a weights file"))] = None,
    precision: PrecisionOption = "fp32",
    batch: Annotated[int | None, typer.Option("--batch", help="A fixed batch size (default 1).")] = None,
    dynamic_batch: Annotated[str | None, typer.Option(
        "--dynamic-batch", metavar="MIN:OPT:MAX", help="A dynamic batch range and the size to optimise for.")] = None,
    no_fold: Annotated[bool, typer.Option(
        "--no-fold", help="Keep the training graph: no BatchNorm folding, no merging of parallel branches.")] = False,
    input_: InputOption = None,
    input_format: Annotated[str, typer.Option(
        "--input-format", help="What the artifact takes: float images in 0-1 or uint8 images in 0-255 (NCHW).")
    ] = "float",
    raw_input: Annotated[bool, typer.Option(
        "--raw-input", help="Leave the input normalisation out: the artifact takes the network's own input.")] = False,
    mean: Annotated[str | None, typer.Option(
        "--mean", metavar="M1,M2,..", help="Per-channel mean in 0-1 units to bake in (instead of the weights').")
    ] = None,
    std: Annotated[str | None, typer.Option(
        "--std", metavar="S1,S2,..", help="Per-channel std in 0-1 units to bake in (instead of the weights').")
    ] = None,
    features: Annotated[str | None, typer.Option(
        "--features", metavar="NAME,NAME,..", help="Output these layers or groups (e.g. layer2,layer3,layer4) "
                                                   "instead of the network's output: a backbone.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation when no --weights.",
                                      callback=check_seed)] = 0,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Write the artifact even if its output is not within the tolerance of PyTorch's "
                            "(see docs/deploy.md).")] = False,
    set_: SetOption = None,
) -> None:
    """Write an exported program, ONNX file, TorchScript module or TensorRT engine, and check it against PyTorch."""
    check_choice("--backend", backend, tuple(BACKENDS))
    check_precision(precision)
    info = BACKENDS[backend]
    if precision not in info.precisions:
        fail(f"the {backend} backend builds {' or '.join(info.precisions)}, not {precision}", 2)
    if output.suffix.lower() == ".res":
        fail(f"-o {output} ends in .res, the suffix of a spec; give the artifact's file name, e.g. "
             f"{output.with_suffix(info.suffix)}", 2)
    check_choice("--input-format", input_format, INPUT_FORMATS)
    if raw_input and input_format != "float":
        fail("--raw-input takes the network's own (float) input, so it cannot go with --input-format uint8", 2)
    statistics = {"--mean": parse_floats("--mean", mean), "--std": parse_floats("--std", std)}
    names = feature_names(features)
    profile = batch_profile(batch, dynamic_batch)
    network = with_input(load_network(spec, set_), input_)
    if output.is_dir():
        fail(f"-o {output} is a directory; give the artifact's file name, e.g. {output / network.name}{info.suffix}")
    output_file(output, "-o")
    not_an_input(output, "-o", {"the spec": zoo.resolve(spec), "the --weights file": weights})
    check_statistics(statistics, network.input_shape[0])
    check_memory(network, profile.max, "--dynamic-batch" if profile.dynamic else "--batch")
    saved = read_weights_or_fail(weights) if weights is not None else None
    contract = input_contract(network, normalization_of(saved, statistics), "raw" if raw_input else input_format)
    try:
        with staging_folder(output) as folder:  # first, so that an output that cannot be written fails at once
            module = load_backend(backend)
            if hasattr(module, "require"):
                module.require()
            model = prepare_model(network, saved, seed, names)
            report = build_artifact(module, model, network, contract, folder / output.name, backend=backend,
                                    precision=precision, batch=profile, fold=info.fold and not no_fold, seed=seed)
            failure = None if no_verify else verification_failure(report, backend, precision)
            if failure is not None:  # the staging folder goes, so nothing of this build is left
                fail(f"the {backend} artifact failed verification: {failure}; {unchanged(output)} (--no-verify "
                     "writes it anyway)")
            move_into_place(folder, output, report.files)
    except (BackendUnavailable, Unsupported) as error:
        fail(str(error))
    except WriteFailed as error:
        fail(f"cannot write {output}: {error}; {unchanged(output)}")
    except typer.Exit:
        raise
    except Exception as error:
        fail(f"the {backend} build failed: {first_line(error)}")
    report.path = str(output)
    report.size = sum((output.parent / name).stat().st_size for name in report.files)
    folded = "BN folded" if info.fold and not no_fold else "BN kept"
    typer.echo(f"{backend}: {report.path} ({human_bytes(report.size)}), {precision}, {profile}, {folded}, "
               f"{contract.describe()}; {checked(report)}{' (not verified: --no-verify)' * no_verify}")


def unchanged(output: Path) -> str:
    return f"the existing {output.name} is unchanged" if output.exists() else "nothing was written"


def verification_failure(report: BuildReport, backend: str, precision: str) -> str | None:
    """Why the artifact's output is not close enough to PyTorch's (the tolerances of docs/deploy.md), or None."""
    if not report.errors:
        return f"it could only be checked with {report.checked_with}, not run"
    if not report.reference_finite:
        return ("the PyTorch model's own output is not finite with these weights (e.g. a very deep net overflows at "
                "its initialisation), so there is nothing to compare the artifact with")
    return tolerance(backend, precision).exceeded(report.errors, precision)


def build_artifact(module: ModuleType, model: torch.nn.Module, network: Network, contract: InputContract, out: Path,
                   *, backend: str, precision: str, batch: BatchProfile, fold: bool, seed: int) -> BuildReport:
    """Fold, cast and prepend the normalisation to `model`, then let the backend write and check `out`.

    The reference is the unfolded fp32 model fed the example after the contract's preprocessing, as in training.
    """
    import torch
    from torch.utils._pytree import tree_leaves

    from resdsl.backends.artifact import DTYPES, cast, output_names
    from resdsl.backends.preprocess import bake

    dtype = DTYPES[precision]
    example = contract.example(batch.example, network.input_shape, dtype, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(contract.prepare(example))
    if fold:  # parallel conv/BN/identity branches merged into one conv, then BatchNorm folded
        from resdsl.backends.reparam import reparameterize

        model = reparameterize(model)
    deployed = bake(cast(model, example, precision)[0], contract, dtype)
    metadata = {
        "producer": "resdsl", "resdsl_version": resdsl_version(), "network": network.name, "backend": backend,
        "precision": precision, "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max},
        "input_shape": list(network.input_shape), "input_dtype": str(example.dtype).removeprefix("torch."),
        **contract.metadata(), "outputs": output_names(expected),
    }
    report = module.build(deployed, example, out, batch=batch, expected=expected, metadata=metadata)
    report.reference_finite = all(bool(torch.isfinite(leaf).all()) for leaf in tree_leaves(expected))
    return report


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{flag} must be one of {', '.join(choices)}, not {value!r}", 2)


def check_precision(precision: str, choices: tuple[str, ...] = PRECISIONS) -> None:
    check_choice("--precision", precision, choices)
    if precision == "int8":
        fail(INT8, 2)


def whole_numbers(text: str, separator: str) -> list[int] | None:
    """`text` split at `separator` into whole numbers (ASCII digits, at most MAX_DIGITS each), or None."""
    parts = text.strip().split(separator)
    if not all(re.fullmatch(rf"[0-9]{{1,{MAX_DIGITS}}}", p.strip()) for p in parts):
        return None
    return [int(p) for p in parts]


def batch_profile(batch: int | None, dynamic: str | None) -> BatchProfile:
    """The batch profile of `--batch N` or `--dynamic-batch MIN:OPT:MAX` (exit 2 on bad values)."""
    if batch is not None and dynamic is not None:
        fail("give either --batch or --dynamic-batch, not both", 2)
    if dynamic is None:
        if batch is not None and batch < 1:
            fail(f"--batch must be at least 1, not {batch}", 2)
        return BatchProfile(batch or 1, batch or 1, batch or 1)
    parts = whole_numbers(dynamic, ":")
    if parts is None or len(parts) != 3:
        fail(f"--dynamic-batch takes MIN:OPT:MAX, three whole numbers such as 1:8:32, not {quoted(dynamic)}", 2)
    low, opt, high = parts
    if not 1 <= low <= opt <= high or low == high:
        fail(f"--dynamic-batch needs 1 <= MIN <= OPT <= MAX with MIN < MAX, not {quoted(dynamic)}", 2)
    return BatchProfile(low, opt, high)


def with_input(network: Network, shape: str | None) -> Network:
    """The network re-checked for `--input CxHxW`, if given (SpecError if the spec cannot take it)."""
    if shape is None:
        return network
    dims = whole_numbers(shape.lower(), "x")
    if dims is None or len(dims) != 3 or 0 in dims:
        fail(f"--input takes CxHxW, three positive whole numbers such as 3x64x64, not {quoted(shape)}", 2)
    try:
        return network.with_input(tuple(dims))
    except SpecError as error:  # the flag's size over a limit: say so of the flag; the spec's own errors stand
        about_input = [d for d in error.diagnostics if d.span == network.program.network.input.span]
        if about_input and len(about_input) == len(error.diagnostics):
            fail(f"--input {shape}: {about_input[0].message}")
        raise


def parse_floats(flag: str, text: str | None) -> list[float] | None:
    """`--mean 0.485,0.456,0.406`: finite numbers, comma-separated (exit 2 otherwise)."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        fail(f"{flag} takes one number per channel, comma-separated, such as 0.485,0.456,0.406, not {quoted(text)}", 2)
    if flag == "--std" and min(values) <= 0:
        fail(f"--std values must be positive, not {quoted(text)}", 2)
    return values


def check_statistics(statistics: dict[str, list[float] | None], channels: int) -> None:
    for flag, values in statistics.items():
        if values is not None and len(values) != channels:
            fail(f"{flag} needs {channels} values, one per input channel, not {len(values)}", 2)


def check_memory(network: Network, batch: int, flag: str = "--batch") -> None:
    """Exit 1 before anything is allocated when even the least a forward pass needs exceeds the memory here.

    The least: the weights, plus at `batch` (given by `flag`) the input and the largest stage output, which
    exist at once (fp32).
    """
    largest = max((math.prod(stage.output) for stage in network.stages), default=0)
    need = 4 * (network.params + batch * (math.prod(network.input_shape) + largest))
    available = available_memory()
    if available is not None and need > available:
        shape = "x".join(map(str, network.input_shape))
        fail(f"{network.name} at {shape} (--input) and batch {batch} ({flag}) needs at least {human_bytes(need)} "
             f"for its weights, input and largest feature map, more than the {human_bytes(available)} of memory "
             f"available here; use a smaller --input or {flag}")


def available_memory() -> int | None:
    """Bytes this process could still allocate: free RAM and swap, capped by a cgroup limit (None if unknown)."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = (int(meminfo["MemAvailable"].split()[0]) + int(meminfo.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return available


def read_weights_or_fail(path: Path) -> Weights:
    """The weights in `path` (see resdsl.weights), or exit 1 saying what the file is not."""
    from resdsl.weights import WeightsError, read_weights

    try:
        return read_weights(path)
    except WeightsError as error:
        fail(str(error))


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


def prepare_model(network: Network, saved: Weights | None, seed: int,
                  features: list[str] | None = None) -> torch.nn.Module:
    """The network's module in eval mode (returning `features` if given), with `saved` weights loaded or the seeded
    initialisation. A feature extractor takes the weights of its layers from a checkpoint of the whole net."""
    from resdsl.backends.pytorch import UnknownFeature
    from resdsl.weights import WeightsError, load_weights

    try:
        model = network.to_torch(seed=seed, features=features)
    except UnknownFeature as error:
        fail(f"--features: {error}", 2)
    if saved is not None:
        if features is not None:
            own = model.state_dict()
            saved = replace(saved, state={key: value for key, value in saved.state.items() if key in own})
        try:
            load_weights(model, saved, network.name)
        except WeightsError as error:
            fail(str(error))
    return model.eval()


def normalization_of(saved: Weights | None, statistics: dict[str, list[float] | None]) -> Normalization:
    """The normalisation to bake: --mean/--std if given, else the `mean` (and `std`) a resdsl checkpoint records,
    each checked in float32, the dtype the artifact applies them in."""
    import torch

    from resdsl.backends.preprocess import Normalization
    from resdsl.weights import WeightsError, preprocessing, statistic_problem

    if any(v is not None for v in statistics.values()):
        given = {flag: torch.tensor(v, dtype=torch.float64) for flag, v in statistics.items() if v is not None}
        for flag, values in given.items():
            if (problem := statistic_problem(values, flag.removeprefix("--"))) is not None:
                fail(f"{flag} {','.join(f'{v:g}' for v in values.tolist())} is {problem}", 2)
        mean, std = (given.get(flag) for flag in ("--mean", "--std"))
        return Normalization(mean, std, " and ".join(given))
    if saved is None:
        return Normalization(source="built without --weights")
    try:
        recorded = preprocessing(saved)
    except WeightsError as error:
        fail(f"{error}; build with --raw-input, or give --mean/--std")
    if recorded.mean is None and recorded.std is None:
        return Normalization(source=f"{saved.path.name} records none (give --mean/--std if the net was trained on "
                                    "normalised input)")
    return Normalization(recorded.mean, recorded.std, saved.path.name)


def input_contract(network: Network, normalization: Normalization, input_format: str) -> InputContract:
    """The artifact's input (`float`, `uint8` or `raw`) with `normalization`, which must fit the network's input."""
    from resdsl.backends.preprocess import InputContract

    misfit = normalization.misfit(network.input_shape)
    if misfit and input_format != "raw":  # raw input only records the statistics for the caller
        stat = normalization.mean if normalization.mean is not None else normalization.std
        hint = f"--input {'x'.join(map(str, stat.shape))}, " if stat.dim() == 3 else ""
        fail(f"{misfit}; build with {hint}--raw-input, or --mean/--std")
    return InputContract(input_format, normalization)


def resdsl_version() -> str:
    from resdsl import __version__

    return __version__


def checked(report: BuildReport) -> str:
    if not report.errors:
        return f"checked with {report.checked_with}"
    e = report.errors
    if not report.reference_finite:
        return f"loaded with {report.checked_with}, but the outputs are not finite with these weights"
    return (f"checked with {report.checked_with}: max abs err {e['max_abs']:.2e}, "
            f"max rel err {e['max_rel']:.2e}, cosine {e['cosine']:.6f}")


def listing(keys: list[str], shown: int = 3) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def register(app: typer.Typer) -> None:
    app.command("build")(build)
