"""The zoo against numbers from outside the project: torchvision, the paper's tables, hand computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app

SPECS = Path(__file__).resolve().parent.parent / "specs"

# torchvision.models.<name>: sum(p.numel() for p in model.parameters()), and GMACs at 224x224
# (conv + linear multiply-accumulates) as listed in PAPER.md's table.
TORCHVISION = {
    "resnet18": (11_689_512, 1.814),
    "resnet34": (21_797_672, 3.664),
    "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801),
    "resnet152": (60_192_808, 11.514),
    "resnext50_32x4d": (25_028_904, 4.23),
    "resnext101_32x8d": (88_791_336, 16.41),
    "resnext101_64x4d": (83_455_272, 15.46),
    "wide_resnet50_2": (68_883_240, 11.40),
    "wide_resnet101_2": (126_886_696, 22.75),
}

# He et al. 2015, Table 6: parameters of the CIFAR-10 ResNets (6n+2 layers, option A).
CIFAR_PARAMS = {
    "cifar20": 269_722,
    "cifar32": 464_154,
    "cifar44": 658_586,
    "cifar56": 853_018,
    "cifar110": 1_727_962,
    "cifar1202": 19_421_274,
}

# The three 1x1 projections option B adds to ResNet-18/34 (layer2, layer3, layer4):
# 128*28*28*64 = 256*14*14*128 = 512*7*7*256 = 6,422,528 MACs each.
PROJECTION_MACS = 3 * 6_422_528
# ResNet-34 with option B, by hand: conv1 64*112*112*3*49 = 118,013,952; each 3x3 conv that keeps
# width costs 115,605,504 and each stride-2 3x3 that doubles it 57,802,752; 29 of the former,
# 3 of the latter, 3 projections, and fc 512*1000.
RESNET34_B_MACS = 118_013_952 + 29 * 115_605_504 + 3 * 57_802_752 + PROJECTION_MACS + 512_000
# ResNet-18 with option B: 13 width-keeping 3x3 convs instead of 29.
RESNET18_B_MACS = 118_013_952 + 13 * 115_605_504 + 3 * 57_802_752 + PROJECTION_MACS + 512_000


def _compile(name: str) -> resdsl.Network:
    return resdsl.compile(SPECS / f"{name}.res")


def _significant(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_params_are_exact(name):
    assert _compile(f"torchvision/{name}").params == TORCHVISION[name][0]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_gmacs_to_three_digits(name):
    gmacs = TORCHVISION[name][1]
    assert _significant(_compile(f"torchvision/{name}").macs / 1e9, 3) == _significant(gmacs, 3)


@pytest.mark.parametrize(("name", "gmacs"), [("resnet50", 3.858), ("resnet101", 7.570), ("resnet152", 11.282)])
def test_paper_bottleneck_nets_macs_match_paper_md(name, gmacs):
    # PAPER.md prints three decimals of 10^9.
    assert round(_compile(name).macs / 1e9, 3) == gmacs


def test_resnet34_option_b_macs_match_paper_md():
    assert round(_compile("resnet34b").macs / 1e9, 3) == 3.664


def test_resnet34_option_b_macs_match_hand_count():
    assert _compile("resnet34b").macs == RESNET34_B_MACS


@pytest.mark.parametrize(("name", "printed", "option_b"),
                         [("resnet18", 1.8e9, RESNET18_B_MACS), ("resnet34", 3.6e9, RESNET34_B_MACS)])
def test_option_a_nets_macs_are_option_b_minus_projections(name, printed, option_b):
    macs = _compile(name).macs
    assert round(macs, -8) == printed  # Table 1 prints 1.8 and 3.6 x 10^9
    assert macs == option_b - PROJECTION_MACS


def test_torchvision_resnet18_macs_match_hand_count():
    assert _compile("torchvision/resnet18").macs == RESNET18_B_MACS


@pytest.mark.parametrize("name", sorted(CIFAR_PARAMS))
def test_cifar_params_match_table_6(name):
    assert _compile(name).params == CIFAR_PARAMS[name]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_plain_nets_have_their_resnets_params(depth):
    # Option A is parameter free, so removing the shortcuts changes no count.
    assert _compile(f"cifar_plain{depth}").params == CIFAR_PARAMS[f"cifar{depth}"]


def test_wrn28_10_has_36_5_million_params():
    assert round(_compile("wrn28_10").params / 1e6, 1) == 36.5


def test_vgg19_macs_match_figure_3():
    assert round(_compile("vgg19").macs / 1e9, 1) == 19.6


def test_vgg19_params_match_torchvision():
    assert _compile("vgg19").params == 143_667_240


def test_resnet50_stage_output_sizes_match_table_1():
    sizes = {s.name: tuple(s.output[1:]) for s in _compile("resnet50").stages}
    assert [sizes[f"layer{i}"] for i in range(1, 5)] == [(56, 56), (28, 28), (14, 14), (7, 7)]


def test_resnet50_stage_widths_match_table_1():
    widths = {s.name: s.output[0] for s in _compile("resnet50").stages}
    assert [widths[f"layer{i}"] for i in range(1, 5)] == [256, 512, 1024, 2048]


def test_every_zoo_spec_checks():
    specs = sorted(str(p) for p in SPECS.rglob("*.res"))
    result = CliRunner().invoke(app, ["check", *specs])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(specs)


def test_info_json_has_the_design_keys():
    result = CliRunner().invoke(app, ["info", str(SPECS / "resnet50.res"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"name", "input", "output", "params", "macs", "stages"} <= set(data)
    assert data["input"] == [3, 224, 224] and data["output"] == [1000]
    assert data["params"] == 25_557_032
    for stage in data["stages"]:
        assert {"name", "blocks", "output", "params", "macs"} <= set(stage)
    assert [s["blocks"] for s in data["stages"] if s["name"].startswith("layer")] == [3, 4, 6, 3]
    assert sum(s["params"] for s in data["stages"]) == data["params"]


def test_info_table_shows_each_stage_and_total():
    result = CliRunner().invoke(app, ["info", "resnet50"])
    assert result.exit_code == 0, result.output
    for word in ("layer1", "layer4", "total", "25,557,032"):
        assert word in result.output
