"""The run folder's spec.res: one file that compiles alone to the network and recipe of the run."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.recipe import Recipe, recipe_of
from resdsl.train.runspec import WRITERS, standalone_spec

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"

PARENT = """\
param n = 2
param widen = 1

block wide(width, stride = 1) {
  conv1: conv 3x3, width * widen, stride stride
  bn1: batchnorm
  relu
  conv2: conv 3x3, width * widen
  bn2: batchnorm
  add shortcut
  relu
}

shortcut projected {
  same { identity }
  changed { 0: conv 1x1, out_channels, stride stride; 1: batchnorm }
}

network family {
  input 3x16x16
  stem { conv1: conv 3x3, 8; bn1: batchnorm; relu }
  stages (block: wide, shortcut: A) {
    layer1: n x 8
    layer2: n x 16, stride 2
  }
  head { avgpool; fc: linear 10 }
}
"""
CHILD = """\
network member extends "parent.res" (n = 1) {
  stages (shortcut: projected)
  train { dataset fashion_mnist; epochs 3; schedule steps(2: 0.1) }
}
"""


def _same_network(ours: resdsl.Network, reference: resdsl.Network) -> None:
    assert (ours.name, ours.params, ours.macs, ours.input_shape) == \
        (reference.name, reference.params, reference.macs, reference.input_shape)
    ours_state, reference_state = ours.to_torch(seed=0).state_dict(), reference.to_torch(seed=0).state_dict()
    assert list(ours_state) == list(reference_state)
    assert all(torch.equal(ours_state[key], reference_state[key]) for key in reference_state)


def _same_schedule(ours: Recipe, reference: Recipe, steps_per_epoch: int) -> None:
    total = reference.total_iterations(steps_per_epoch)
    assert ours.total_iterations(steps_per_epoch) == total
    assert [ours.lr_at(i, steps_per_epoch) for i in range(total + 2)] == \
        [reference.lr_at(i, steps_per_epoch) for i in range(total + 2)]


@pytest.mark.parametrize("name", ["cifar20", "resnet18"])
def test_a_zoo_spec_with_extends_compiles_alone_to_the_same_network_and_recipe(name: str):
    reference = resdsl.compile(str(SPECS / f"{name}.res"))
    text = standalone_spec(reference, reference.recipe, 390, f"specs/{name}.res")
    assert "extends" not in text
    alone = resdsl.compile(text)
    _same_network(alone, reference)
    assert alone.recipe == reference.recipe


def test_own_blocks_shortcuts_merged_stages_and_bound_params_travel(tmp_path: Path):
    (tmp_path / "parent.res").write_text(PARENT)
    (tmp_path / "child.res").write_text(CHILD)
    reference = resdsl.compile(str(tmp_path / "child.res"), widen=2)
    text = standalone_spec(reference, reference.recipe, 7, "child.res")
    assert "param n = 1\nparam widen = 2\n" in text
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "spec.res").write_text(text)
    alone = resdsl.compile(str(tmp_path / "elsewhere" / "spec.res"))
    _same_network(alone, reference)
    _same_schedule(alone.recipe, reference.recipe, 7)


@pytest.mark.parametrize("lines", [
    [],
    ['dataset "fashion-mnist"', "epochs 3", "schedule steps(1: 0.1, 2: 0.5)", "warmup iterations 5"],
    ["epochs 4", "warmup lr 0.01, until_train_error 0.8", "augment none", "split 0", "nesterov", "mean_subtract false"],
    ["schedule cosine()", "iterations 900", "augment pad 2, crop 28", "split 100, 20", "label_smoothing 0.1"],
    ["augment crop 224, flip, scale range(256, 480)", "dataset imagefolder", "warmup lr 0.01, iterations 40"],
    ["schedule plateau(factor: 0.5, patience: 3, threshold: 0.01)", "augment crop 64, scale range(72, 80), "
     "lighting 0.1", "dataset imagefolder"],
])
def test_the_recipe_reads_back_with_the_same_schedule(lines: list[str]):
    network = resdsl.compile(str(SPECS / "cifar20.res"))
    recipe = recipe_of(network.program, lines)
    alone = recipe_of(resdsl.compile(standalone_spec(network, recipe, 11, "x")).program)
    _same_schedule(alone, recipe, 11)
    unit = ("schedule", "iterations", "epochs")
    assert {k: v for k, v in alone.to_json().items() if k not in unit} == \
           {k: v for k, v in recipe.to_json().items() if k not in unit}


def test_every_recipe_setting_is_written():
    assert set(WRITERS) == {f.name for f in fields(Recipe) if f.compare}
