"""`resdsl info` names per stage the attention and norm its blocks are given, when the spec sets them off their
defaults; checked against the options as the spec files write them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdsl.cli.app import app

SPECS = Path(__file__).resolve().parent.parent / "specs"
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _info(*args: str) -> str:
    result = CliRunner().invoke(app, ["info", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _written_option(spec: Path, option: str) -> str:
    """The value of `option` in the spec's `stages (...)` line, as written."""
    stages_line = re.search(r"stages\s*\((.*)\)", spec.read_text()).group(1)
    return re.search(rf"\b{option}:\s*(\w+(?:\([^)]*\))?)", stages_line).group(1)


@pytest.mark.parametrize("spec, option, column", [
    ("timm/seresnet50.res", "attn", "attn"),
    ("timm/ecaresnet50d.res", "attn", "attn"),
    ("timm/resnet50_gn.res", "norm", "norm"),
])
def test_info_shows_each_stages_attention_or_norm_as_written(spec, option, column):
    value = _written_option(SPECS / spec, option)
    lines = _info(str(SPECS / spec)).splitlines()
    header = lines[1].split()
    assert column in header
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    for stage in STAGES:
        assert rows[stage][header.index(column)] == value


def test_info_json_gives_the_written_attention():
    stages = json.loads(_info(str(SPECS / "timm/seresnet50.res"), "--json"))["stages"]
    assert [stage.get("attn") for stage in stages] == [None, "se", "se", "se", "se", None]


@pytest.mark.parametrize("spec", ["resnet50.res", "timm/resnet50d.res", "cifar20.res"])
def test_info_has_no_attention_or_norm_column_for_default_blocks(spec):
    header = _info(str(SPECS / spec)).splitlines()[1].split()
    assert "attn" not in header and "norm" not in header


def test_info_hides_an_option_written_at_its_default(tmp_path):
    spec = tmp_path / "r.res"
    spec.write_text('network r extends "torchvision/resnet50" {\n  stages (attn: none, norm: batchnorm)\n}\n')
    header = _info(str(spec)).splitlines()[1].split()
    assert "attn" not in header and "norm" not in header
