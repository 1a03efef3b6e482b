"""The parts the training loop drives, each on its own: the trainer's step, the run folder, the metrics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_SPEC
from torch import nn

import resdsl
from resdsl.recipe import Recipe
from resdsl.train import RunConfig, RunError
from resdsl.train.distributed import Context
from resdsl.train.run_folder import RunFolder
from resdsl.train.run_metrics import RunMetrics
from resdsl.train.trainer import Trainer

pytestmark = pytest.mark.torch

CPU = Context(0, 1, torch.device("cpu"))


def test_a_trainer_step_is_one_plain_sgd_step(tmp_path: Path) -> None:
    network = resdsl.compile(TINY_SPEC)
    recipe = Recipe(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True, label_smoothing=0.1)
    trainer = Trainer(network, recipe, RunConfig(recipe=recipe, out=tmp_path, seed=3), CPU, print)
    reference = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)
    images = torch.rand(8, 1, 12, 12)
    labels = torch.arange(8)

    loss, wrong, _ = trainer.step(images, labels, 0.05, lambda batch, generator: batch, iteration=0)

    logits = reference(images)
    expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    expected.backward()
    optimizer.step()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-6)
    assert wrong == int((logits.argmax(1) != labels).sum())
    assert trainer.lr == 0.05
    for (name, mine), theirs in zip(trainer.model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, msg=name)


def test_a_run_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(RunError, match=r"^--out .*run is a file, not a directory$"):
        RunFolder(tmp_path / "run")


def test_a_resume_names_every_setting_and_flag_that_differs(tmp_path: Path) -> None:
    saved = {"recipe": Recipe(lr=0.1, batch=64).to_json(), "run": {"seed": 1, "limit_train": None}}
    with pytest.raises(RunError) as caught:
        RunFolder(tmp_path).same_run(saved, Recipe(lr=0.05, batch=64, iterations=10), {"seed": 2, "limit_train": None},
                                     steps_per_epoch=5, total=10)
    assert "was trained with lr 0.1 (now 0.05), --seed 1 (now 2); give the same spec" in str(caught.value)


def test_a_fresh_run_folder_removes_only_what_it_added(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    folder = RunFolder(tmp_path)
    folder.lock()
    folder.start("network t {}\n", {"a": 1}, None)
    folder.release()
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    folder.remove_written()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_metrics_records_count_epochs_and_only_the_main_process_writes(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    main, other = RunMetrics(folder, True, steps_per_epoch=4, total=12), RunMetrics(folder, False, 4, 12)
    record = main.record("train", 6, lr=0.1)
    assert (record["kind"], record["iteration"], record["epoch"], record["lr"]) == ("train", 6, 1.5, 0.1)
    main.write(record)
    other.write(other.record("train", 7, lr=0.1))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [6]
