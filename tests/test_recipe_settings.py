"""The recipe's setting descriptors: one per Recipe field, each read -> written back -> read to the same value,
and the `resdsl train` flags declared from them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdsl.cli.app import app
from resdsl.data import DATASETS
from resdsl.recipe import SETTINGS, Augmentation, Recipe, Schedule, Warmup, recipe_of
from resdsl.resolve import load, read_spec

# Per setting: train-section lines and the field value each means, written out by hand.
EXAMPLES: dict[str, list[tuple[str, object]]] = {
    "dataset": [("dataset fashion_mnist", "fashion-mnist"), ('dataset "cifar100"', "cifar100")],
    "split": [("split 45000, 5000", (45000, 5000)), ("split 5000", (None, 5000)), ("split 0", None)],
    "batch": [("batch 256", 256)],
    "lr": [("lr 0.05", 0.05), ("lr 1e-5", 1e-5)],
    "momentum": [("momentum 0", 0.0), ("momentum 0.875", 0.875)],
    "weight_decay": [("weight_decay 5e-4", 5e-4)],
    "nesterov": [("nesterov", True), ("nesterov false", False)],
    "schedule": [("schedule steps(32000: 0.1, 48000: 0.1)", Schedule(milestones=((32000, 0.1), (48000, 0.1)))),
                 ("schedule cosine()", Schedule(kind="cosine", milestones=())),
                 ("schedule plateau(factor: 0.5, patience: 300)",
                  Schedule(kind="plateau", milestones=(), factor=0.5, patience=300))],
    "iterations": [("iterations 64000", 64000)],
    "epochs": [("epochs 90", 90)],
    "warmup": [("warmup lr 0.01, until_train_error 0.8", Warmup(lr=0.01, until_train_error=0.8)),
               ("warmup iterations 400", Warmup(iterations=400)), ("warmup none", None)],
    "label_smoothing": [("label_smoothing 0.1", 0.1)],
    "augment": [("augment pad 4, crop 32, flip", Augmentation(pad=4, crop=32, flip=True)),
                ("augment scale range(256, 480), crop 224, flip, lighting 0.1",
                 Augmentation(crop=224, flip=True, scale=(256, 480), lighting=0.1)),
                ("augment none", None)],
    "mean_subtract": [("mean_subtract false", False)],
}
# Flag values and the field value each means.
FLAGS: dict[str, tuple[object, object]] = {
    "dataset": ("fashion-mnist", "fashion-mnist"), "split": ("5000", (None, 5000)), "batch": (64, 64),
    "lr": (0.2, 0.2), "momentum": (0.5, 0.5), "weight_decay": (1e-5, 1e-5), "nesterov": (True, True),
    "schedule": ("cosine()", Schedule(kind="cosine", milestones=())), "iterations": (10, 10), "epochs": (3, 3),
    "warmup": ("iterations 400", Warmup(iterations=400)), "label_smoothing": (0.1, 0.1),
    "augment": ("none", None), "mean_subtract": (False, False),
}


def _read(line: str) -> Recipe:
    program = load(read_spec("network t {\n  input 3x32x32\n  stem { conv 3x3, 16 }\n}\n"), {})
    return recipe_of(program, [line])


def test_there_is_one_setting_per_recipe_field_in_the_same_order() -> None:
    assert list(SETTINGS) == [f.name for f in fields(Recipe) if f.compare]


def test_every_setting_has_examples_and_a_flag() -> None:
    assert set(EXAMPLES) == set(SETTINGS) == set(FLAGS)


@pytest.mark.parametrize(("key", "line", "value"), [(key, line, value) for key, lines in EXAMPLES.items()
                                                    for line, value in lines])
def test_every_setting_reads_its_value_and_writes_it_back(key: str, line: str, value: object) -> None:
    read = getattr(_read(line), key)
    assert read == value
    written = SETTINGS[key].write(read)
    assert getattr(_read(f"{key} {written}"), key) == value


@pytest.mark.parametrize("key", list(FLAGS))
def test_every_flag_value_stands_for_its_setting_line(key: str) -> None:
    flag_value, value = FLAGS[key]
    assert isinstance(flag_value, SETTINGS[key].flag)
    assert getattr(_read(SETTINGS[key].line(flag_value)), key) == value


def test_the_dataset_flag_names_every_registered_dataset() -> None:
    assert all(name in SETTINGS["dataset"].help for name in DATASETS)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_every_setting_is_a_train_flag_with_its_help(key: str) -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    flag = f"--{key.replace('_', '-')}"
    shown = next(line for line in result.output.splitlines() if f" {flag} " in line)
    assert " ".join(SETTINGS[key].help.split()[:2]) in shown


def test_the_docs_table_lists_every_setting() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    listed = {key.strip("` ") for line in text.splitlines() if line.startswith("| `")
              for key in line.split("|")[1].split("/")}
    assert set(SETTINGS) <= listed


def test_a_number_or_flag_given_as_text_is_the_lines_text() -> None:
    # resdsl.train(settings={"nesterov": "true"}) means the line `nesterov true`, as main's Python API took it
    assert SETTINGS["nesterov"].line("true") == "nesterov true"
    assert SETTINGS["lr"].line("5e-2") == "lr 5e-2"
    assert SETTINGS["dataset"].line("cifar100") == 'dataset "cifar100"'  # a name is quoted, as the section writes it
