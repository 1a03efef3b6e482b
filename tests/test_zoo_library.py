"""The zoo as a library (`resdsl.zoo`) and `resdsl zoo`, against the files in specs/ and PAPER.md's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import resdsl
from resdsl import zoo
from resdsl.cli.app import app
from resdsl.cli.common import complete_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
FILES = {p.relative_to(SPECS).with_suffix("").as_posix(): p for p in SPECS.rglob("*.res")}


def test_every_spec_file_is_a_zoo_name():
    assert zoo.names() == sorted(FILES)
    assert {"resnet50", "torchvision/resnet50", "preact/preact164"} <= set(zoo.names())


@pytest.mark.parametrize("name", ["resnet50", "torchvision/resnet50", "preact/preact164"])
def test_find_gives_the_shipped_file(name):
    assert zoo.find(name).samefile(FILES[name])


def test_a_zoo_name_may_end_in_res():
    assert zoo.find("torchvision/resnet50.res") == zoo.find("torchvision/resnet50")


@pytest.mark.parametrize("name", ["../specs/resnet50", "/resnet50", "torchvision", "", ".res", "RESNET50"])
def test_find_knows_only_zoo_names(name):
    assert zoo.find(name) is None


def test_resolve_prefers_a_path_that_exists_over_a_zoo_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet50").write_text("network mine { }")
    assert zoo.resolve("resnet50") == "resnet50"
    assert zoo.resolve("torchvision/resnet18") == zoo.find("torchvision/resnet18")
    assert zoo.resolve("resnet18.res") == zoo.find("resnet18")
    assert zoo.resolve("elsewhere/resnet18.res") == "elsewhere/resnet18.res"
    assert zoo.resolve("no_such_net") == "no_such_net"


def test_source_is_the_folder_a_spec_comes_from():
    sources = {spec.name: spec.source for spec in zoo.specs()}
    assert sources["torchvision/resnext50_32x4d"] == "torchvision"
    assert sources["resnet50"] == sources["cifar110"] == sources["preact/preact164"] == "paper"


def test_description_is_the_leading_comment():
    description = {spec.name: spec.description for spec in zoo.specs()}["resnet152"]
    comment = [line.lstrip("# ") for line in FILES["resnet152"].read_text().splitlines() if line.startswith("#")]
    assert description == " ".join(comment)


def test_a_zoo_file_compiles_to_torchvisions_counts():
    network = resdsl.compile(zoo.find("torchvision/resnet50"))
    assert (network.params, round(network.macs / 1e9, 3)) == (25_557_032, 4.089)  # PAPER.md, torchvision's family


def test_compile_takes_a_zoo_name():
    assert resdsl.compile("resnet50").params == 25_557_032


def test_zoo_json_lists_every_spec_with_counts_and_source():
    result = CliRunner().invoke(app, ["zoo", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(FILES)
    # PAPER.md: Table 1 with the paper's stride placement, Table 6, torchvision's family
    assert (rows["resnet152"]["params"], round(rows["resnet152"]["macs"] / 1e9, 3)) == (60_192_808, 11.282)
    assert rows["cifar1202"]["params"] == 19_421_274
    assert rows["torchvision/wide_resnet101_2"]["params"] == 126_886_696
    assert rows["torchvision/resnet18"]["source"] == "torchvision"
    assert rows["cifar20"]["input"] == [3, 32, 32] and rows["cifar20"]["output"] == [10]


def test_zoo_table_has_one_row_per_spec():
    result = CliRunner().invoke(app, ["zoo"])
    assert result.exit_code == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert names == sorted(FILES)


def test_a_spec_argument_completes_zoo_names():
    assert complete_spec("torchvision/resnet1") == sorted(n for n in FILES if n.startswith("torchvision/resnet1"))
    assert complete_spec("nothing") == []
