"""`resdsl.build`: a deployable artifact from a spec and, optionally, its weights, verified against PyTorch.

What `resdsl build` does, as a library: prepare the model, settle the artifact's input contract, check that a
forward pass fits in memory, write the backend's files in a staging folder, and move them into place only when
the artifact's output is within the tolerance of the PyTorch module's (docs/deploy.md). Nothing here prints or
exits: bad arguments raise UsageError, anything else that stops a build raises BuildError, WeightsError, DataError
(`--int8`'s calibration data) or the backends' BackendUnavailable and Unsupported, each with one sentence for the
user.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from resdsl import quantization, zoo
from resdsl.backends import (
    BACKENDS,
    INPUT_FORMATS,
    PRECISIONS,
    Backend,
    BatchProfile,
    BuildReport,
    WriteFailed,
    load_backend,
)
from resdsl.backends.staging import move_into_place, staging_folder
from resdsl.diagnostics import SpecError
from resdsl.limits import human_bytes, shortened
from resdsl.network import Network
from resdsl.quantization import HELDOUT_IMAGES, MAX_DROP, Int8Accuracy, Quantization
from resdsl.resolve import UsageError, check_seed, is_source_text, load, read_spec

if TYPE_CHECKING:
    from types import ModuleType

    import torch

    from resdsl.backends.preprocess import InputContract, Normalization
    from resdsl.expr import Value
    from resdsl.weights import Preprocessing, Weights

INT8 = ("--precision int8 is not supported: TensorRT 11 dropped implicit INT8 calibration, so quantize the model "
        "with NVIDIA ModelOpt (explicit Q/DQ nodes) and build that instead; for OpenVINO, build with --int8 "
        "--calibration DATA")


class BuildError(Exception):
    """A build that cannot be done, or whose artifact failed verification; the message is one sentence."""


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote and how its output compared with the PyTorch module's.

    `errors` holds `max_abs`, `max_rel` and `cosine` (empty when the backend could only check, not run, the
    artifact); `verified` says the artifact passed the tolerance gate (False when built with `verify=False`);
    `int8` holds the held-out accuracy of the fp32 and INT8 artifacts of an `int8` build.
    """

    path: Path
    files: list[Path]
    size: int
    backend: str
    precision: str
    batch: BatchProfile
    folded: bool
    contract: InputContract
    errors: dict[str, float]
    checked_with: str
    reference_finite: bool
    verified: bool
    int8: Int8Accuracy | None = None


def load_network(spec: str | Path | Network, params: dict[str, Value] | None = None) -> Network:
    """`spec` compiled (a spec file, zoo name or spec text) with `params` as `--set` gives them, or `spec` itself."""
    if isinstance(spec, Network):
        if params:
            raise UsageError("params are given to a spec, not to a network that is already compiled")
        return spec
    from resdsl.network import check_program
    from resdsl.resolve import check_override

    values = {name: check_override(name, value, "--set {name}") for name, value in (params or {}).items()}
    return check_program(load(read_spec(spec), values))


def build(
    spec: str | Path | Network,
    backend: str = "onnx",
    output: str | Path | None = None,
    *,
    params: dict[str, Value] | None = None,
    weights: str | Path | None = None,
    precision: str = "fp32",
    batch: int | tuple[int, int, int] = 1,
    fold: bool = True,
    input_shape: tuple[int, int, int] | None = None,
    input_format: str = "float",
    raw_input: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    features: Sequence[str] | None = None,
    seed: int = 0,
    verify: bool = True,
    int8: bool = False,
    calibration: str | Path | None = None,
    int8_max_drop: float = MAX_DROP,
    int8_images: int = HELDOUT_IMAGES,
    dataset: str | None = None,
) -> BuildResult:
    """Write `spec`'s artifact for `backend` to `output` and check it against the PyTorch module.

    `batch` is a fixed size or a dynamic `(min, opt, max)` range; `input_shape` builds for another CxHxW;
    the normalisation baked in is `mean`/`std` if given, else the one `weights`' checkpoint records.
    `int8` quantises an OpenVINO artifact, calibrated on `calibration`'s training images, and refuses it when its
    top-1 error on `int8_images` of its test images exceeds the fp32 artifact's by over `int8_max_drop` points;
    `dataset` names what `calibration` holds (default: the weights' recipe's, else the spec's).
    """
    info = check_options(backend, precision, input_format, raw_input)
    seed = check_seed(seed)
    quantization.check_options(backend, int8, calibration, int8_max_drop, int8_images)
    if dataset is not None and not int8:
        raise UsageError("--dataset names the dataset --calibration holds; it goes with --int8")
    if isinstance(features, str):
        raise UsageError(f"--features takes a list of layer or group names such as ['layer2', 'layer3'], not the "
                         f"string {shortened(repr(features))}")
    if int8 and features:
        raise UsageError("--int8 checks the INT8 artifact's top-1 classes, which a --features backbone does not "
                         "output: build with one of --int8 and --features")
    if output is None:
        raise UsageError("give the artifact's file name: output=...")
    output = Path(output)
    if output.suffix.lower() == ".res":
        raise UsageError(f"-o {output} ends in .res, the suffix of a spec; give the artifact's file name, e.g. "
                         f"{output.with_suffix(info.suffix)}")
    profile = batch_profile(batch)
    statistics = {"--mean": checked_floats("--mean", mean), "--std": checked_floats("--std", std)}
    network = load_network(spec, params)
    check_output(output, network, info.suffix, {"the spec": spec_path(spec), "the --weights file": weights})
    saved = read_weights(Path(weights)) if weights is not None else None
    recorded = recorded_preprocessing(saved, statistics)
    network = fitted_input(network, input_shape, recorded)
    check_statistics(statistics, network.input_shape[0])
    check_memory(network, profile.max, "--dynamic-batch" if profile.dynamic else "--batch")
    contract = input_contract(network, normalization_of(saved, statistics, recorded),
                              "raw" if raw_input else input_format)
    folded = info.fold and fold
    quantized = None
    if int8 and calibration is not None:  # checked: --int8 needs --calibration
        quantization.require()
        quantized = Quantization(*quantization.datasets(network, saved, calibration, dataset), int8_max_drop,
                                 int8_images)
    report, accuracy = write_artifact(network, saved, contract, output, backend=backend, precision=precision,
                                      batch=profile, fold=folded, seed=seed, features=features, verify=verify,
                                      int8=quantized)
    return BuildResult(
        path=output, files=[output.parent / name for name in report.files],
        size=sum((output.parent / name).stat().st_size for name in report.files), backend=backend,
        precision="int8" if int8 else precision, batch=profile, folded=folded, contract=contract,
        errors=dict(report.errors), checked_with=report.checked_with, reference_finite=report.reference_finite,
        verified=verify, int8=accuracy)


def check_options(backend: str, precision: str, input_format: str, raw_input: bool,
                  backends: Sequence[str] = tuple(BACKENDS)) -> Backend:
    """The backend's record, once the backend, precision and input format are ones it takes (UsageError if not)."""
    check_choice("--backend", backend, tuple(backends))
    check_precision(precision)
    info = BACKENDS[backend]
    if precision not in info.precisions:
        raise UsageError(f"the {backend} backend builds {' or '.join(info.precisions)}, not {precision}")
    check_choice("--input-format", input_format, INPUT_FORMATS)
    if raw_input and input_format != "float":
        raise UsageError("--raw-input takes the network's own (float) input, so it cannot go with --input-format "
                         "uint8")
    return info


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")


def check_precision(precision: str, choices: tuple[str, ...] = PRECISIONS) -> None:
    check_choice("--precision", precision, choices)
    if precision == "int8":
        raise UsageError(INT8)


def batch_profile(batch: int | tuple[int, int, int]) -> BatchProfile:
    """A fixed batch of `batch` images, or the dynamic range `(min, opt, max)` (UsageError on bad values)."""
    if not (type(batch) is int or (isinstance(batch, tuple | list) and len(batch) == 3
                                   and all(type(size) is int for size in batch))):
        raise UsageError(f"--batch takes a whole number, or --dynamic-batch a (MIN, OPT, MAX) range of them, not "
                         f"{shortened(repr(batch))}")
    if isinstance(batch, int):
        if batch < 1:
            raise UsageError(f"--batch must be at least 1, not {batch}")
        return BatchProfile(batch, batch, batch)
    low, opt, high = batch
    if not 1 <= low <= opt <= high or low == high:
        raise UsageError(f"--dynamic-batch needs 1 <= MIN <= OPT <= MAX with MIN < MAX, not '{low}:{opt}:{high}'")
    return BatchProfile(low, opt, high)


def checked_floats(flag: str, values: Sequence[float] | None) -> list[float] | None:
    """`--mean`/`--std` values: finite numbers, a std positive (UsageError otherwise)."""
    if values is None:
        return None
    try:  # any number float() takes (a numpy float32, a tensor's element), but no string
        if isinstance(values, str | bytes) or any(isinstance(v, str | bytes) for v in values):
            raise TypeError
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UsageError(f"{flag} takes one number per channel, such as [0.485, 0.456, 0.406], not "
                         f"{shortened(repr(values))}") from None
    text = ",".join(f"{v:g}" for v in values)
    if not values or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} takes one number per channel, comma-separated, such as 0.485,0.456,0.406, not "
                         f"{text!r}")
    if flag == "--std" and min(values) <= 0:
        raise UsageError(f"--std values must be positive, not {text!r}")
    return values


def spec_path(spec: str | Path | Network) -> Path | None:
    """The file `spec` is read from (None for a network or spec text)."""
    return None if isinstance(spec, Network) or is_source_text(spec) else Path(zoo.resolve(spec))


def check_output(output: Path, network: Network, suffix: str, inputs: dict[str, str | Path | None]) -> None:
    """BuildError unless a file may be written at `output`: not a folder, a special file or one of the `inputs`."""
    from resdsl.files import output_problem, overwritten_input

    if output.is_dir():
        raise BuildError(f"-o {output} is a directory; give the artifact's file name, e.g. "
                         f"{output / network.name}{suffix}")
    if (problem := output_problem(output, "-o") or overwritten_input(output, "-o", inputs)) is not None:
        raise BuildError(problem)


def with_input(network: Network, shape: tuple[int, int, int] | None, flag: str = "--input") -> Network:
    """The network re-checked for the input `shape`, if given (SpecError if the spec cannot take it)."""
    if shape is None:
        return network
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise UsageError(f"{flag} takes CxHxW, three positive whole numbers such as 3x64x64, not {shape!r}")
    try:
        return network.with_input(shape)
    except SpecError as error:  # the argument's size over a limit: say so of it; the spec's own errors stand
        spec = network.program.network
        where = spec.input.span if spec.input else spec.span  # where Network.with_input puts the shape
        about_input = [d for d in error.diagnostics if d.span == where]
        if about_input and len(about_input) == len(error.diagnostics):
            raise BuildError(f"{flag} {'x'.join(map(str, shape))}: {about_input[0].message}") from None
        raise


def fitted_input(network: Network, input_shape: tuple[int, int, int] | None, recorded: Preprocessing) -> Network:
    """The network for `input_shape` if given, else for the input its weights were trained on, if recorded."""
    if input_shape is not None:
        return with_input(network, input_shape)
    if recorded.input is not None and recorded.input != network.input_shape:
        return with_input(network, recorded.input, "the weights' recorded input")
    return network


def check_statistics(statistics: dict[str, list[float] | None], channels: int) -> None:
    for flag, values in statistics.items():
        if values is not None and len(values) != channels:
            raise UsageError(f"{flag} needs {channels} values, one per input channel, not {len(values)}")


def check_memory(network: Network, batch: int, flag: str = "--batch") -> None:
    """BuildError before anything is allocated when even the least a forward pass needs exceeds the memory here.

    The least: the weights, plus at `batch` (given by `flag`) the input and the largest stage output, which
    exist at once (fp32).
    """
    largest = max((math.prod(stage.output) for stage in network.stages), default=0)
    need = 4 * (network.params + batch * (math.prod(network.input_shape) + largest))
    available = available_memory()
    if available is not None and need > available:
        shape = "x".join(map(str, network.input_shape))
        raise BuildError(f"{network.name} at {shape} (--input) and batch {batch} ({flag}) needs at least "
                         f"{human_bytes(need)} for its weights, input and largest feature map, more than the "
                         f"{human_bytes(available)} of memory available here; use a smaller --input or {flag}")


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


def read_weights(path: Path) -> Weights:
    """The weights in `path` (see resdsl.weights); WeightsError saying what the file is not."""
    from resdsl.weights import read_weights as read

    return read(path)


def recorded_preprocessing(saved: Weights | None, statistics: dict[str, list[float] | None]) -> Preprocessing:
    """What `saved`'s checkpoint records of its preprocessing; its mean and std are not read when given here."""
    from resdsl.weights import Preprocessing, StatisticError, preprocessing

    if saved is None:
        return Preprocessing()
    given = any(values is not None for values in statistics.values())
    try:
        return preprocessing(saved, statistics=not given)
    except StatisticError as error:
        raise StatisticError(f"{error}; build with --raw-input, or give --mean/--std") from None


def normalization_of(saved: Weights | None, statistics: dict[str, list[float] | None],
                     recorded: Preprocessing) -> Normalization:
    """The normalisation to bake: --mean/--std if given, else the `mean` (and `std`) the checkpoint records,
    each checked in float32, the dtype the artifact applies them in."""
    import torch

    from resdsl.backends.preprocess import Normalization
    from resdsl.weights import statistic_problem

    if any(v is not None for v in statistics.values()):
        given = {flag: torch.tensor(v, dtype=torch.float64) for flag, v in statistics.items() if v is not None}
        for flag, values in given.items():
            if (problem := statistic_problem(values, flag.removeprefix("--"))) is not None:
                raise UsageError(f"{flag} {','.join(f'{v:g}' for v in values.tolist())} is {problem}")
        mean, std = (given.get(flag) for flag in ("--mean", "--std"))
        return Normalization(mean, std, " and ".join(given))
    if saved is None:
        return Normalization(source="built without --weights")
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
        hint = f"--input {'x'.join(map(str, stat.shape))}, " if stat is not None and stat.dim() == 3 else ""
        raise BuildError(f"{misfit}; build with {hint}--raw-input, or --mean/--std")
    return InputContract(input_format, normalization)


def write_artifact(network: Network, saved: Weights | None, contract: InputContract, output: Path, *, backend: str,
                   precision: str, batch: BatchProfile, fold: bool, seed: int, features: Sequence[str] | None,
                   verify: bool, int8: Quantization | None = None) -> tuple[BuildReport, Int8Accuracy | None]:
    """Build in a staging folder beside `output` and move the files into place only once they pass verification
    (and, quantised, the INT8 accuracy gate); a failure leaves nothing of this build and a user's existing file
    unchanged."""
    from resdsl.backends import BackendUnavailable, Unsupported
    from resdsl.data import DataError
    from resdsl.weights import WeightsError

    accuracy = None
    try:
        with staging_folder(output) as folder:  # first, so that an output that cannot be written fails at once
            module = load_backend(backend)
            if hasattr(module, "require"):
                module.require()
            model = prepare_model(network, saved, seed, features)
            fp32 = folder / "fp32" / output.name if int8 is not None else folder / output.name
            fp32.parent.mkdir(exist_ok=True)
            report = build_artifact(module, model, network, contract, fp32, backend=backend,
                                    precision=precision, batch=batch, fold=fold, seed=seed)
            failure = verification_failure(report, backend, precision) if verify else None
            if failure is None and int8 is not None:
                accuracy = quantize(fp32, folder / output.name, report, network, saved, contract, batch, seed, int8)
                failure = accuracy.failure(int8.max_drop) if verify else None
                backend = f"{backend} INT8"
            if failure is not None:  # the staging folder goes, so nothing of this build is left
                raise BuildError(f"the {backend} artifact failed verification: {failure}; {unchanged(output)} "
                                 "(--no-verify writes it anyway)")
            move_into_place(folder, output, report.files)
    except (BackendUnavailable, Unsupported, BuildError, UsageError, WeightsError, DataError):
        raise
    except WriteFailed as error:
        raise BuildError(f"cannot write {output}: {error}; {unchanged(output)}") from None
    except Exception as error:
        raise BuildError(f"the {backend} build failed: {first_line(error)}") from error
    return report, accuracy


def quantize(fp32: Path, out: Path, report: BuildReport, network: Network, saved: Weights | None,
             contract: InputContract, batch: BatchProfile, seed: int, options: Quantization) -> Int8Accuracy:
    """Quantise the fp32 IR into `out`, calibrated on DATA's training images, and measure both on its test images;
    `report` then lists the INT8 files, whose sidecar records the precision, calibration and accuracy."""
    import json
    from dataclasses import asdict

    from resdsl.backends.artifact import write_sidecar

    calibration = quantization.calibration_batches(options.train, network, contract, batch, seed)
    files = quantization.quantize(fp32, out, calibration)
    measured = quantization.accuracy(fp32, out, options.test, network, contract, batch,
                                     min(len(options.train), quantization.CALIBRATION_IMAGES), options.images)
    metadata = json.loads(fp32.with_name(f"{fp32.name}.json").read_text())
    metadata.update(precision="int8", int8={**asdict(measured), "quantizer": "nncf.quantize"})
    report.files = [*files, write_sidecar(out, metadata)]
    return measured


def prepare_model(network: Network, saved: Weights | None, seed: int,
                  features: Sequence[str] | None = None) -> torch.nn.Module:
    """The network's module in eval mode (returning `features` if given), with `saved` weights loaded or the seeded
    initialisation. A feature extractor takes the weights of its layers from a checkpoint of the whole net."""
    from resdsl.backends.pytorch import UnknownFeature
    from resdsl.weights import load_weights

    try:
        model = network.to_torch(seed=seed, features=None if features is None else list(features))
    except UnknownFeature as error:
        raise UsageError(f"--features: {error}") from None
    if saved is not None:
        if features is not None:
            own = model.state_dict()
            saved = replace(saved, state={key: value for key, value in saved.state.items() if key in own})
        load_weights(model, saved, network.name)
    return model.eval()


def build_artifact(module: ModuleType, model: torch.nn.Module, network: Network, contract: InputContract, out: Path,
                   *, backend: str, precision: str, batch: BatchProfile, fold: bool, seed: int) -> BuildReport:
    """Fold, cast and prepend the normalisation to `model`, then let the backend write and check `out`.

    The reference is the unfolded fp32 model fed the example after the contract's preprocessing, as in training.
    """
    import torch
    from torch.utils._pytree import tree_leaves

    from resdsl import __version__
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
        "producer": "resdsl", "resdsl_version": __version__, "network": network.name, "backend": backend,
        "precision": precision, "batch": {"min": batch.min, "opt": batch.opt, "max": batch.max},
        "input_shape": list(network.input_shape), "input_dtype": str(example.dtype).removeprefix("torch."),
        **contract.metadata(), "outputs": output_names(expected),
    }
    report = module.build(deployed, example, out, batch=batch, expected=expected, metadata=metadata)
    report.reference_finite = all(bool(torch.isfinite(leaf).all()) for leaf in tree_leaves(expected))
    return report


def verification_failure(report: BuildReport, backend: str, precision: str) -> str | None:
    """Why the artifact's output is not close enough to PyTorch's (the tolerances of docs/deploy.md), or None."""
    if not report.errors:
        return f"it could only be checked with {report.checked_with}, not run"
    if not report.reference_finite:
        return ("the PyTorch model's own output is not finite with these weights (e.g. a very deep net overflows at "
                "its initialisation), so there is nothing to compare the artifact with")
    return BACKENDS[backend].tolerance(precision).exceeded(report.errors, precision)


def unchanged(output: Path) -> str:
    return f"the existing {output.name} is unchanged" if output.exists() else "nothing was written"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
