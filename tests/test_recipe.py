"""The `train` section as a Recipe: the paper's numbers, the schedule at its boundaries, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from resdsl.cli.app import app
from resdsl.diagnostics import SpecError
from resdsl.recipe import Plateau, Recipe, recipe_of, summary_lines
from resdsl.resolve import load, read_spec

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _program(path: str):
    return load(read_spec(path), {})


def _recipe(train: str) -> Recipe:
    text = f"network t {{\n  input 3x32x32\n  stem {{ conv 3x3, 16 }}\n  train {{\n{train}\n  }}\n}}\n"
    return recipe_of(load(read_spec(text), {}))


def _error(train: str) -> str:
    with pytest.raises(SpecError) as info:
        _recipe(train)
    return info.value.render()


def test_cifar_spec_carries_the_papers_recipe():
    recipe = recipe_of(_program("specs/cifar_resnet.res"))
    # He et al. 2015, section 4.2.
    assert (recipe.dataset, recipe.split, recipe.batch) == ("cifar10", (45000, 5000), 128)
    assert (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.iterations) == (0.1, 0.9, 1e-4, 64000)
    assert recipe.schedule.milestones == ((32000, 0.1), (48000, 0.1))
    assert (recipe.augment.pad, recipe.augment.crop, recipe.augment.flip, recipe.mean_subtract) == (4, 32, True, True)


def test_papers_schedule_at_its_boundaries():
    recipe = recipe_of(_program("specs/cifar_resnet.res"))
    lrs = [recipe.lr_at(i, steps_per_epoch=352) for i in (0, 31999, 32000, 47999, 48000, 63999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_resnet110_warms_up_at_0_01_until_train_error_below_80_percent():
    recipe = recipe_of(_program("specs/cifar110.res"))
    assert recipe.lr_at(0, 352, warming=True) == 0.01
    assert recipe.lr_at(399, 352, warming=True) == 0.01
    assert not recipe.warmup.ends(0.85)
    assert not recipe.warmup.ends(0.80)
    assert recipe.warmup.ends(0.79)
    assert recipe.lr_at(400, 352, warming=False) == 0.1
    assert recipe.lr_at(32000, 352, warming=False) == pytest.approx(0.01)


def test_constant_warmup_for_given_iterations():
    recipe = recipe_of(_program("specs/preact/preact_cifar.res"))
    assert [recipe.lr_at(i, 352) for i in (0, 399, 400)] == [0.01, 0.01, 0.1]


def test_linear_warmup_ramps_to_lr():
    recipe = _recipe("lr 0.4\n warmup iterations 4\n iterations 100")
    assert [recipe.lr_at(i, 10) for i in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


def test_epoch_milestones_scale_by_steps_per_epoch():
    recipe = recipe_of(_program("specs/wrn28_10.res"))  # steps(60: 0.2, 120: 0.2, 160: 0.2), epochs 200
    assert recipe.nesterov and recipe.epochs == 200 and recipe.iterations is None
    assert recipe.lr_at(60 * 391 - 1, 391) == pytest.approx(0.1)
    assert recipe.lr_at(60 * 391, 391) == pytest.approx(0.02)
    assert recipe.lr_at(160 * 391, 391) == pytest.approx(0.1 * 0.2**3)


def test_cosine_schedule_halves_at_midpoint_and_reaches_zero():
    recipe = _recipe("lr 0.2\n schedule cosine()\n iterations 1000")
    assert recipe.lr_at(0, 10) == pytest.approx(0.2)
    assert recipe.lr_at(500, 10) == pytest.approx(0.1)
    assert recipe.lr_at(1000, 10) == pytest.approx(0.0)


def test_spec_without_train_section_gets_cifar_defaults():
    recipe = recipe_of(_program("specs/vgg19.res"))
    assert recipe == Recipe()
    assert (recipe.lr, recipe.iterations, recipe.batch) == (0.1, 64000, 128)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_imagenet_specs_carry_the_papers_imagenet_recipe(name: str):
    recipe = recipe_of(_program(str(SPECS / f"{name}.res")))
    # PAPER.md, "ImageNet recipe": SGD, batch 256, lr 0.1 divided by 10 on plateau, up to 60e4 iterations,
    # weight decay 1e-4, momentum 0.9; shorter side in [256, 480], 224 crop or its flip, per-pixel mean,
    # AlexNet's PCA lighting (std 0.1 in AlexNet and fb.resnet.torch)
    assert (recipe.dataset, recipe.split, recipe.batch, recipe.lr) == ("imagenet", None, 256, 0.1)
    assert (recipe.momentum, recipe.weight_decay, recipe.nesterov, recipe.label_smoothing) == (0.9, 1e-4, False, 0.0)
    assert (recipe.schedule.kind, recipe.schedule.factor, recipe.iterations, recipe.warmup) == ("plateau", 0.1,
                                                                                                  600000, None)
    augment = recipe.augment
    assert (augment.scale, augment.crop, augment.flip, augment.pad, augment.lighting) == ((256, 480), 224, True, 0,
                                                                                           0.1)
    assert recipe.mean_subtract


def test_plateau_cuts_the_lr_when_pytorchs_reduce_lr_on_plateau_does():
    every, patience = 100, 3  # evaluations every 100 iterations; patience of 3 evaluations
    recipe = _recipe(f"lr 0.1\n schedule plateau(factor: 0.1, patience: {every * patience})\n iterations 100000")
    tracker = Plateau(recipe.schedule, steps_per_epoch=10)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=patience, threshold=1e-4,
                                                           eps=0)  # eps: PyTorch stops cutting near 1e-8
    errors = torch.rand(80, generator=torch.Generator().manual_seed(0)).tolist()
    errors[10:40] = [0.5] * 30  # a long plateau, then noise again
    for number, error in enumerate(errors, start=1):
        tracker.observe(number * every, error)
        reference.step(error)
        assert recipe.lr_at(number * every, 10, drops=tracker.drops) == pytest.approx(optimizer.param_groups[0]["lr"])
    assert tracker.drops >= 2


def test_plateau_patience_counts_epochs_beside_epochs():
    recipe = _recipe("schedule plateau(patience: 2)\n epochs 90")
    assert Plateau(recipe.schedule, steps_per_epoch=500).patience == 1000


def test_plateau_resumes_from_its_state():
    recipe = _recipe("schedule plateau(patience: 100)")
    first = Plateau(recipe.schedule, 10)
    for iteration, error in ((50, 0.9), (100, 0.8), (150, 0.85), (200, 0.85)):
        first.observe(iteration, error)
    second = Plateau(recipe.schedule, 10)
    second.load_state_dict(first.state_dict())
    assert [first.observe(250, 0.81), second.observe(250, 0.81)] == [True, True]


def test_plateau_without_patience_is_refused_at_the_call():
    assert "<string>:5:10: error: plateau() needs its patience" in _error("schedule plateau(factor: 0.1)")


def test_plateau_factor_of_one_or_more_is_refused():
    assert "the plateau factor must be below 1 (it cuts the lr), got 10" in _error("schedule plateau(factor: 10, "
                                                                                    "patience: 5)")


def test_plateau_unknown_argument_is_refused():
    assert "plateau() takes factor: F, patience: P and threshold: T" in _error("schedule plateau(wait: 5)")


def test_lighting_out_of_range_is_refused():
    assert "'lighting' must be between 0.0 and 1.0, got -0.1" in _error("augment crop 224, lighting -0.1")


def test_crop_larger_than_the_scale_is_refused():
    assert "the crop 300 must fit the shorter side: scale's low bound is 256" in _error(
        "augment scale range(256, 480), crop 300")


def test_scale_with_pad_is_refused():
    assert "'scale' and 'pad' do not combine" in _error("augment pad 4, scale range(256, 480), crop 224")


def test_summary_of_the_imagenet_recipe_names_its_numbers():
    lines = summary_lines(recipe_of(_program(str(SPECS / "resnet50.res"))))
    text = "\n".join(lines)
    for words in ("imagenet", "SGD, batch 256, momentum 0.9, weight decay 0.0001",
                  "0.1, times 0.1 each time the evaluation error has not improved for 25,000 iterations",
                  "600,000 iterations", "shorter side resized to a random size in [256, 480]",
                  "random 224x224 crop, horizontal flip, PCA lighting (std 0.1)", "per-pixel mean subtracted"):
        assert words in text, words
    starts = {len(line) - len(line[len(line.split()[0]):].lstrip()) for line in lines}
    assert len(starts) == 1  # the values line up in one column


def test_override_replaces_setting_and_the_other_length_unit():
    recipe = recipe_of(_program("specs/cifar_resnet.res"), ["lr 0.05", "epochs 3"])
    assert (recipe.lr, recipe.epochs, recipe.iterations) == (0.05, 3, None)
    # the spec's milestones stay in the spec's unit
    assert recipe.schedule.unit == "iterations"


def test_fashion_mnist_name_maps_to_data_name():
    assert _recipe("dataset fashion_mnist").dataset == "fashion-mnist"


@pytest.mark.parametrize("written", ["dataset fashion-mnist", "dataset fashion - mnist"])
def test_a_dashed_dataset_name_unquoted_says_how_to_write_it(written: str):
    assert 'error: unquoted, the \'-\' in fashion-mnist is a minus: write the dataset name "fashion-mnist" or ' \
           "fashion_mnist" in _error(written)
    assert _recipe('dataset "fashion-mnist"').dataset == "fashion-mnist"


def test_unknown_key_suggests_the_close_one():
    assert "unknown train setting 'momentun'; did you mean 'momentum'?" in _error("momentun 0.9")


def test_error_points_at_the_setting():
    # line 5 of the text _recipe builds, column of the value -0.1
    assert "<string>:5:7: error: the learning rate must be positive, got -0.1" in _error("   lr -0.1")


def test_negative_lr_is_refused():
    assert "the learning rate must be positive" in _error("lr -0.1")


def test_wrong_type_is_refused():
    assert "'batch' must be an integer, got 1.5" in _error("batch 1.5")
    assert "'nesterov' takes true or false, got 3" in _error("nesterov 3")


def test_iterations_and_epochs_together_are_refused():
    assert "give either 'iterations' or 'epochs', not both" in _error("iterations 10\n epochs 2")


def test_decreasing_milestones_are_refused():
    assert "milestones must increase; 100 follows 200" in _error("schedule steps(200: 0.1, 100: 0.1)")


def test_unknown_dataset_is_refused():
    assert "unknown dataset 'cifar11'; did you mean 'cifar10'?" in _error("dataset cifar11")


def test_every_bad_setting_is_reported_at_once():
    message = _error("lr -1\n batch 0\n momentum 2")
    assert message.count("error:") == 3


def test_info_shows_the_papers_imagenet_recipe_under_the_table():
    result = CliRunner().invoke(app, ["info", "resnet50"])
    assert result.exit_code == 0, result.output
    recipe = result.output.split("train (the spec's recipe)")[1]
    for words in ("SGD, batch 256, momentum 0.9, weight decay 0.0001", "0.1, times 0.1 each time",
                  "600,000 iterations", "[256, 480], random 224x224 crop, horizontal flip, PCA lighting",
                  "per-pixel mean subtracted"):
        assert words in recipe
