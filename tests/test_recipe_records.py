"""A recipe as checkpoints, config.json and `info --json` record it, and read back (`Recipe.to_json` / `from_json`)."""

from __future__ import annotations

import json

import pytest

from resdsl.recipe import Augmentation, Recipe, Schedule, Warmup, recipe_of
from resdsl.resolve import load, read_spec

# Records written by resdsl before its recipes were dataclasses (pydantic's `model_dump(mode="json")`, main at
# c241da5): the paper's default recipe, and one with every optional part filled in. Checkpoints hold these.
DEFAULT_RECORD = (
    '{"dataset": "cifar10", "split": [45000, 5000], "batch": 128, "lr": 0.1, "momentum": 0.9, '
    '"weight_decay": 0.0001, "nesterov": false, "schedule": {"kind": "steps", "milestones": [[32000, 0.1], '
    '[48000, 0.1]], "unit": "iterations", "factor": 0.1, "patience": 0, "threshold": 0.0001}, "iterations": 64000, '
    '"epochs": null, "warmup": null, "label_smoothing": 0.0, "augment": {"pad": 4, "crop": 32, "flip": true, '
    '"scale": null, "lighting": 0.0}, "mean_subtract": true}')
FULL_RECORD = (
    '{"dataset": "imagenet", "split": [null, 10000], "batch": 128, "lr": 0.1, "momentum": 0.9, '
    '"weight_decay": 0.0001, "nesterov": false, "schedule": {"kind": "plateau", "milestones": [], "unit": "epochs", '
    '"factor": 0.5, "patience": 300, "threshold": 0.0001}, "iterations": null, "epochs": 90, "warmup": {"lr": 0.01, '
    '"iterations": null, "until_train_error": 0.8}, "label_smoothing": 0.0, "augment": {"pad": 0, "crop": 224, '
    '"flip": true, "scale": [256, 480], "lighting": 0.1}, "mean_subtract": true}')
FULL = Recipe(dataset="imagenet", split=(None, 10000), iterations=None, epochs=90,
              schedule=Schedule(kind="plateau", milestones=(), unit="epochs", factor=0.5, patience=300),
              warmup=Warmup(lr=0.01, until_train_error=0.8),
              augment=Augmentation(crop=224, flip=True, scale=(256, 480), lighting=0.1))


@pytest.mark.parametrize(("record", "recipe"), [(DEFAULT_RECORD, Recipe()), (FULL_RECORD, FULL)])
def test_a_record_written_before_reads_back_as_its_recipe(record: str, recipe: Recipe):
    assert Recipe.from_json(json.loads(record)) == recipe


@pytest.mark.parametrize(("record", "recipe"), [(DEFAULT_RECORD, Recipe()), (FULL_RECORD, FULL)])
def test_a_recipe_is_recorded_as_before(record: str, recipe: Recipe):
    assert json.dumps(recipe.to_json()) == record


def test_a_record_without_a_setting_takes_its_default():
    assert Recipe.from_json({"lr": 0.05, "batch": 64}) == Recipe(lr=0.05, batch=64)


def test_a_whole_number_reads_as_a_float_setting():
    assert Recipe.from_json({"lr": 1}).lr == 1.0
    assert isinstance(Recipe.from_json({"lr": 1}).lr, float)


@pytest.mark.parametrize("record", [
    [], {"lr": "0.1"}, {"lr": True}, {"batch": 3.5}, {"batch": None}, {"nesterov": 1}, {"split": [1]},
    {"split": [1, 2, 3]}, {"schedule": {"kind": "linear"}}, {"schedule": {"unit": "hours"}},
    {"schedule": {"milestones": [[1, 0.1, 2]]}}, {"schedule": []}, {"augment": {"scale": [1]}},
    {"warmup": {"iterations": "400"}},
])
def test_a_record_with_a_value_of_the_wrong_type_is_refused(record):
    with pytest.raises(ValueError, match=r"^recipe"):
        Recipe.from_json(record)


def _program(train: str):
    return load(read_spec(f"network t {{\n  input 3x32x32\n  stem {{ conv 3x3, 16 }}\n  train {{\n{train}\n  }}\n}}\n"),
                {})


def test_a_recipe_knows_which_settings_were_given():
    # The paper's CIFAR augmentation follows the data's image size only where no one chose it (resdsl/train/data.py).
    assert recipe_of(_program("    lr 0.05")).given == {"lr"}
    assert "augment" in recipe_of(_program("    augment pad 4, crop 32, flip")).given
    assert Recipe.from_json(json.loads(DEFAULT_RECORD)).given >= {"augment", "lr"}
    assert Recipe.from_json({"lr": 0.05}).given == {"lr"}
    assert Recipe().updated(augment=None).given == {"augment"}


def test_what_was_given_does_not_make_two_recipes_differ():
    assert recipe_of(_program("    lr 0.1")) == Recipe()
