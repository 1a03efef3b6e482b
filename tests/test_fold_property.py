"""BatchNorm folding leaves every network the language can write unchanged: randomly generated specs (grouped and
depthwise convs, convs with bias, norms in a row, norms after add and concat, a conv output read twice) with
random BatchNorm statistics give the same output folded and unfolded, computed in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from resdsl.backends.fold import fold_batchnorm

pytestmark = pytest.mark.torch

INPUT = (4, 6, 6)
WIDTHS = (2, 4, 6, 8)


@st.composite
def layers(draw: st.DrawFn, channels: int, path: str = "", start: str = "input",
           first: str | None = None) -> tuple[list[str], int]:
    """Layer lines of a run of ops (with forks joined by add or concat) from the tensor `start`, after `first` if
    given, and the channels they end with. `path` keeps the labels of nested runs apart."""
    lines = [first] if first else []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "batchnorm", "batchnorm", "relu", "fork"]))
        if kind == "conv":
            out = draw(st.sampled_from(WIDTHS))
            groups = draw(st.sampled_from([g for g in range(1, 9) if channels % g == 0 and out % g == 0]))
            kernel = draw(st.sampled_from(["1x1", "3x3"]))
            bias = ", bias" if draw(st.booleans()) else ""
            lines.append(f"conv {kernel}, {out}, groups {groups}{bias}")
            channels = out
        elif kind == "fork" and len(path) < 2:
            lines, channels = draw(fork(lines, channels, f"{path}{len(lines)}", start))
        else:
            lines.append("batchnorm" if kind == "fork" else kind)
    return lines, channels


@st.composite
def fork(draw: st.DrawFn, lines: list[str], channels: int, path: str, start: str) -> tuple[list[str], int]:
    """The current tensor read by two branches (each possibly starting with a norm), joined by add or concat."""
    lines, start = labelled(lines, f"t{path}", start)
    first, first_channels = draw(layers(channels, f"{path}a", start))
    second, second_channels = draw(layers(channels, f"{path}b", start)) if draw(st.booleans()) else ([], channels)
    first, end = labelled(first, f"b{path}", start)
    join = "add" if first_channels == second_channels and draw(st.booleans()) else "concat"
    joined = first_channels if join == "add" else first_channels + second_channels
    return [*lines, *first, f"from {start}", *second, f"{join} {end}"], joined


def labelled(lines: list[str], name: str, start: str) -> tuple[list[str], str]:
    """`lines` with the last one labelled `name` (unless it has a label already), and the label of the tensor they
    end with (`start` if there are none)."""
    if not lines:
        return lines, start
    label, colon, _ = lines[-1].partition(": ")
    if colon:
        return lines, label
    return [*lines[:-1], f"{name}: {lines[-1]}"], name


def spec(body: list[str]) -> str:
    return (f"network folded {{\n  input {'x'.join(map(str, INPUT))}\n  stem {{\n"
            + "".join(f"    {line}\n" for line in body) + "  }\n}\n")


def with_random_statistics(model: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 2 + 0.05)
                module.weight.copy_(torch.randn(module.num_features, generator=generator))
                module.bias.copy_(torch.randn(module.num_features, generator=generator))
    return model.eval()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=layers(8, first="conv 3x3, 8, bias").map(lambda drawn: drawn[0]), seed=st.integers(0, 2**16))
def test_folding_batchnorm_keeps_the_output_of_any_generated_network(body: list[str], seed: int):
    generator = torch.Generator().manual_seed(seed)
    model = with_random_statistics(resdsl.compile(spec(body)).to_torch(seed=seed), generator).double()
    x = torch.randn(2, *INPUT, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        actual = fold_batchnorm(model)(x)
    scale = expected.abs().max().item() or 1.0
    assert (actual - expected).abs().max().item() <= 1e-9 * scale, spec(body)


def test_two_norms_after_one_conv_both_fold_into_it():
    """The case the generator found: the second norm was folded into the conv as it was before the first."""
    network = resdsl.compile(spec(["conv 3x3, 8, groups 2, bias", "batchnorm", "batchnorm"]))
    model = with_random_statistics(network.to_torch(seed=0), torch.Generator().manual_seed(0)).double()
    x = torch.randn(2, *INPUT, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # the reference: each norm applied by hand, (x - mean) / sqrt(var + eps) * weight + bias
    reference = model.conv(x)
    for norm in (model.batchnorm, model.batchnorm_1):
        shape = (1, -1, 1, 1)
        reference = ((reference - norm.running_mean.view(shape)) / (norm.running_var.view(shape) + norm.eps).sqrt()
                     * norm.weight.view(shape) + norm.bias.view(shape))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), reference.detach(), rtol=1e-10, atol=1e-10)
