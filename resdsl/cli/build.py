"""`resdsl build FILE --backend B -o OUT`: a deployable artifact built from a spec and, optionally, its weights."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resdsl.backends import (
    BACKENDS,
    PRECISIONS,
    BackendUnavailable,
    BatchProfile,
    BuildReport,
    Unsupported,
    load_backend,
)
from resdsl.cli.common import SetOption, fail, human_bytes, load_network
from resdsl.diagnostics import SpecError
from resdsl.network import Network

if TYPE_CHECKING:
    import torch

INT8 = ("--precision int8 is not supported: TensorRT 11 dropped implicit INT8 calibration, so quantize the model "
        "with NVIDIA ModelOpt (explicit Q/DQ nodes) and build that instead")

InputOption = Annotated[str | None, typer.Option("--input", metavar="CxHxW",
                                                 help="Build for another input size, e.g. 3x64x64.")]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32, fp16 or bf16 (int8 is refused, see docs).")]


def build(
    spec: Annotated[str, typer.Argument(help="A spec file (.res) or a zoo name.", show_default=False)],
    backend: Annotated[str, typer.Option("--backend", help=f"One of {', '.join(BACKENDS)}.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="The artifact to write.", show_default=False)],
    weights: Annotated[Path | None, typer.Option("--weights", help="A resdsl checkpoint or a state_dict.")] = None,
    precision: PrecisionOption = "fp32",
    batch: Annotated[int | None, typer.Option("--batch", help="A fixed batch size (default 1).")] = None,
    dynamic_batch: Annotated[str | None, typer.Option(
        "--dynamic-batch", metavar="MIN:OPT:MAX", help="A dynamic batch range and the size to optimise for.")] = None,
    no_fold: Annotated[bool, typer.Option("--no-fold", help="Keep BatchNorm layers unfolded.")] = False,
    input_: InputOption = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation when no --weights.")] = 0,
    set_: SetOption = None,
) -> None:
    """Write an exported program, ONNX file, TorchScript module or TensorRT engine, and check it against PyTorch."""
    check_choice("--backend", backend, tuple(BACKENDS))
    check_precision(precision)
    info = BACKENDS[backend]
    if precision not in info.precisions:
        fail(f"the {backend} backend builds {' or '.join(info.precisions)}, not {precision}", 2)
    profile = batch_profile(batch, dynamic_batch)
    network = with_input(load_network(spec, set_), input_)
    module = load_backend(backend)
    try:
        if hasattr(module, "require"):
            module.require()
        import torch

        model = prepare_model(network, weights, seed)
        example = torch.randn(profile.example, *network.input_shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model(example)
        if info.fold and not no_fold:
            from resdsl.backends.fold import fold_batchnorm

            model = fold_batchnorm(model)
        report = write_staged(output, lambda out: module.build(model, example, out, precision=precision,
                                                                batch=profile, expected=expected))
    except (BackendUnavailable, Unsupported) as error:
        fail(str(error))
    except typer.Exit:
        raise
    except Exception as error:
        fail(f"the {backend} build failed: {first_line(error)}")
    folded = "BN folded" if info.fold and not no_fold else "BN kept"
    typer.echo(f"{backend}: {report.path} ({human_bytes(report.size)}), {precision}, {profile}, {folded}; "
               f"{checked(report)}")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{flag} must be one of {', '.join(choices)}, not {value!r}", 2)


def check_precision(precision: str, choices: tuple[str, ...] = PRECISIONS) -> None:
    check_choice("--precision", precision, choices)
    if precision == "int8":
        fail(INT8, 2)


def batch_profile(batch: int | None, dynamic: str | None) -> BatchProfile:
    """The batch profile of `--batch N` or `--dynamic-batch MIN:OPT:MAX` (exit 2 on bad values)."""
    if batch is not None and dynamic is not None:
        fail("give either --batch or --dynamic-batch, not both", 2)
    if dynamic is None:
        if batch is not None and batch < 1:
            fail(f"--batch must be at least 1, not {batch}", 2)
        return BatchProfile(batch or 1, batch or 1, batch or 1)
    parts = dynamic.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        fail(f"--dynamic-batch takes MIN:OPT:MAX, three whole numbers such as 1:8:32, not {dynamic!r}", 2)
    low, opt, high = map(int, parts)
    if not 1 <= low <= opt <= high or low == high:
        fail(f"--dynamic-batch needs 1 <= MIN <= OPT <= MAX with MIN < MAX, not {dynamic!r}", 2)
    return BatchProfile(low, opt, high)


def with_input(network: Network, shape: str | None) -> Network:
    """The network re-checked for `--input CxHxW`, if given (spec diagnostics and exit 1 if it does not fit)."""
    if shape is None:
        return network
    dims = shape.lower().split("x")
    if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
        fail(f"--input takes CxHxW, three positive whole numbers such as 3x64x64, not {shape!r}", 2)
    try:
        return network.with_input(tuple(int(d) for d in dims))
    except SpecError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None


def prepare_model(network: Network, weights: Path | None, seed: int) -> torch.nn.Module:
    """The network's module in eval mode, with `weights` loaded or the seeded initialisation."""
    model = network.to_torch(seed=seed)
    if weights is not None:
        model.load_state_dict(read_state_dict(weights, model.state_dict(), network.name))
    return model.eval()


def read_state_dict(path: Path, own: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict (resdsl's `{"model": ...}` or bare), checked against the model's keys and shapes."""
    import torch

    if not path.is_file():
        fail(f"{path}: no such weights file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        fail(f"{path} is not a readable PyTorch checkpoint ({first_line(error)})")
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        fail(f"{path} holds neither a state_dict nor a resdsl checkpoint (a dict whose 'model' is a state_dict)")
    for prefix in ("module.", "_orig_mod."):  # saved from DistributedDataParallel or torch.compile
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    problems = [f"{label} {listing(keys)}" for label, keys in (
        ("missing", [k for k in own if k not in state]),
        ("unexpected", [k for k in state if k not in own]),
        ("wrong shape for", [k for k in own if k in state and own[k].shape != state[k].shape]),
    ) if keys]
    if problems:
        fail(f"{path} does not fit {name}: {'; '.join(problems)}")
    return state


def write_staged(output: Path, write) -> BuildReport:
    """Let `write(path)` fill a hidden folder beside `output`, then move its files into place, the main one last."""
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        report = write(stage / output.name)
        for name in reversed(report.files):
            os.replace(stage / name, output.parent / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report.path = str(output)
    report.size = sum((output.parent / name).stat().st_size for name in report.files)
    return report


def checked(report: BuildReport) -> str:
    if not report.errors:
        return f"checked with {report.checked_with}"
    e = report.errors
    if e["max_abs"] != e["max_abs"]:  # NaN: e.g. a 1000-layer net at its initialisation overflows in eval mode
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
