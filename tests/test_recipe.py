"""The `train` section as a Recipe: the paper's numbers, the schedule at its boundaries, bad settings."""

from __future__ import annotations

import pytest

from resdsl.diagnostics import SpecError
from resdsl.recipe import Recipe, recipe_of
from resdsl.resolve import load, read_spec


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
    recipe = recipe_of(_program("specs/resnet50.res"))
    assert recipe == Recipe()
    assert (recipe.lr, recipe.iterations, recipe.batch) == (0.1, 64000, 128)


def test_override_replaces_setting_and_the_other_length_unit():
    recipe = recipe_of(_program("specs/cifar_resnet.res"), ["lr 0.05", "epochs 3"])
    assert (recipe.lr, recipe.epochs, recipe.iterations) == (0.05, 3, None)
    # the spec's milestones stay in the spec's unit
    assert recipe.schedule.unit == "iterations"


def test_fashion_mnist_name_maps_to_data_name():
    assert _recipe("dataset fashion_mnist").dataset == "fashion-mnist"


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
