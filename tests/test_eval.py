"""`resdsl eval`: top-1 and top-5 under the centre, 10-crop and multi-scale protocols, against a hand
computation with torchvision's transforms; a run folder or a checkpoint says which dataset to read."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app
from resdsl.data import Augment, Dataset, load_dataset
from resdsl.recipe import Augmentation, Recipe
from resdsl.train.evaluate import evaluate, probabilities

pytestmark = pytest.mark.torch

TINY = """\
network tiny {
  input 3x16x16
  stem { conv1: conv 3x3, 6, stride 2; bn1: batchnorm; relu }
  head { avgpool; fc: linear 10 }
}
"""
CPU = torch.device("cpu")
SIDE = 18  # round(16 * 256 / 224): the testing resize for 16 x 16 crops
SCALES = (16, 18, 27, 34, 46)  # {224, 256, 384, 480, 640} x 16 / 224, rounded


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return resdsl.compile(TINY).to_torch(seed=3).eval()


def hand_probabilities(model: torch.nn.Module, image: torch.Tensor, protocol: str) -> torch.Tensor:
    """The mean softmax over the protocol's views of one uint8 image, computed with torchvision's transforms."""
    if protocol == "center":
        views = [TF.center_crop(TF.resize(image, [SIDE], antialias=True), [16])]
    elif protocol == "10crop":
        views = TF.ten_crop(TF.resize(image, [SIDE], antialias=True), [16])
    else:
        views = [TF.resize(image, [side], antialias=True) for side in SCALES]
    with torch.no_grad():
        return torch.stack([model(view[None].float() / 255).softmax(1)[0] for view in views]).mean(0)


def ranked_labels(probabilities: list[torch.Tensor]) -> torch.Tensor:
    """Label image i with the class the hand computation ranks (i mod 7)-th: its top-1 error is then the share
    of images with i mod 7 != 0 and its top-5 error the share with i mod 7 >= 5, and any other ranking shows."""
    return torch.tensor([int(p.argsort(descending=True)[i % 7]) for i, p in enumerate(probabilities)])


def expected_errors(count: int) -> tuple[float, float]:
    ranks = [i % 7 for i in range(count)]
    return sum(r != 0 for r in ranks) / count, sum(r >= 5 for r in ranks) / count


def read_png(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("protocol", ["center", "10crop", "multiscale"])
def test_folder_protocol_gives_the_hand_computed_mean_softmax(model: torch.nn.Module, png_folder: Path,
                                                              protocol: str) -> None:
    data = load_dataset("imagefolder", png_folder, train=False).sized(16)
    expected = torch.stack([hand_probabilities(model, read_png(path), protocol) for path in data.images.paths])
    augment = Augment()
    ours = torch.cat([probs for probs, _ in probabilities(model, data, CPU, prepare=augment.eval,
                                                          normalize=augment.normalize, protocol=protocol,
                                                          batch=30, workers=1)])
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("protocol", ["10crop", "multiscale"])
def test_tensor_protocol_gives_the_hand_computed_mean_softmax(model: torch.nn.Module, protocol: str) -> None:
    images = torch.randint(0, 256, (15, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([hand_probabilities(model, image, protocol) for image in images])
    augment = Augment()
    data = Dataset(images, torch.zeros(15, dtype=torch.int64), 10, "tensors")
    ours = torch.cat([probs for probs, _ in probabilities(model, data, CPU, prepare=augment.eval,
                                                          normalize=augment.normalize, protocol=protocol, crop=16,
                                                          batch=40)])
    assert torch.allclose(ours, expected, atol=1e-6)


def test_top1_and_top5_errors_count_the_ranks_of_the_true_class(model: torch.nn.Module, png_folder: Path) -> None:
    data = load_dataset("imagefolder", png_folder, train=False).sized(16)
    labels = ranked_labels([hand_probabilities(model, read_png(path), "10crop") for path in data.images.paths])
    augment = Augment()
    scores = evaluate(model, replace(data, labels=labels), CPU, prepare=augment.eval, normalize=augment.normalize,
                      protocol="10crop", workers=0)
    assert (scores.images, scores.top1, scores.top5) == (20, *expected_errors(20))


def test_top5_is_none_for_fewer_than_five_classes(model: torch.nn.Module) -> None:
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    scores = evaluate(model, Dataset(images, torch.tensor([0, 1, 2, 0]), 3, "three"), CPU,
                      prepare=Augment().eval)
    assert scores.top5 is None and scores.top1 in (0.25, 0.5, 0.75, 1.0)


@pytest.fixture
def run_folder(tmp_path: Path, model: torch.nn.Module, png_folder: Path) -> Path:
    """A training run's folder as `resdsl train` leaves it: spec.res, config.json and last.pt, trained on
    an image folder although the spec's own recipe (none: the CIFAR-10 default) says cifar10."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.res").write_text(TINY)
    recipe = Recipe(dataset="imagefolder", split=None, augment=Augmentation(crop=16), mean_subtract=False)
    (run / "config.json").write_text(json.dumps({"recipe": recipe.to_json(), "data": str(png_folder),
                                                 "input": [3, 16, 16]}))
    torch.save({"model": model.state_dict(), "mean": None, "recipe": recipe.to_json()},
               run / "last.pt")
    return run


def test_eval_of_a_run_folder_reads_the_dataset_it_was_trained_on(run_folder: Path, model: torch.nn.Module,
                                                                  png_folder: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(run_folder), "--json", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["dataset"], report["split"], report["data"]) == ("imagefolder", "val", str(png_folder.resolve()))
    assert (report["protocol"], report["images"], report["input"]) == ("center", 20, [3, 16, 16])
    labels = load_dataset("imagefolder", png_folder, train=False).labels
    wrong = [int(hand_probabilities(model, read_png(p), "center").argmax() != label)
             for p, label in zip(sorted((png_folder / "val").rglob("*.png")), labels.tolist(), strict=True)]
    assert report["top1_error"] == sum(wrong) / 20
    assert f"reading imagefolder from {png_folder.resolve()}" in result.stderr


def test_eval_of_weights_takes_the_checkpoints_dataset_not_cifar10(run_folder: Path, tmp_path: Path,
                                                                   png_folder: Path) -> None:
    (tmp_path / "tiny.res").write_text(TINY)
    weights = tmp_path / "elsewhere.pt"
    (run_folder / "last.pt").rename(weights)  # no config.json beside it: the checkpoint's recipe alone
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "tiny.res"), "--weights", str(weights),
                                      "--data", str(png_folder),
                                      "--protocol", "10crop", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tiny on imagefolder val (20 images, 10-crop): top-1 error ")


def test_top5_skip_is_said_once(tmp_path: Path, make_image_folder: Callable) -> None:
    folder = make_image_folder({"train": 1, "val": 1})
    for extra in sorted((folder / "val").iterdir())[3:] + sorted((folder / "train").iterdir())[3:]:
        for file in extra.iterdir():
            file.unlink()
        extra.rmdir()
    (tmp_path / "three.res").write_text(TINY.replace("linear 10 }", "linear 3 }\n  train { dataset imagefolder }"))
    three = resdsl.compile(tmp_path / "three.res").to_torch(seed=0)
    torch.save(three.state_dict(), tmp_path / "three.pt")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "three.res"), "--weights", str(tmp_path / "three.pt"),
                                      "--data", str(folder), "--json", "--workers", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["top5_error"] is None
    assert result.stderr.count("top-5") == 1
    assert "top-5 error skipped: imagefolder has 3 classes, fewer than 5" in result.stderr


def test_unknown_protocol_is_a_usage_error(run_folder: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(run_folder), "--protocol", "5crop"])
    assert result.exit_code == 2
    assert result.stderr == "error: --protocol takes center, 10crop, multiscale, not '5crop'\n"


def test_nvjpeg_decoder_on_a_cpu_eval_of_a_tensor_dataset_is_refused(tiny_workspace: Path, tmp_path: Path) -> None:
    spec = tiny_workspace / "tiny.res"
    torch.save(resdsl.compile(spec).to_torch(seed=0).state_dict(), tmp_path / "tiny.pt")
    result = CliRunner().invoke(app, ["eval", str(spec), "--weights", str(tmp_path / "tiny.pt"),
                                      "--data", str(tiny_workspace / "data"), "--device", "cpu", "--decoder", "nvjpeg"])
    assert result.exit_code == 1
    assert result.stderr == "error: the nvjpeg decoder decodes on a CUDA GPU, and this run's device is the CPU\n"


def eval_run(run: Path, *flags: str):
    return CliRunner().invoke(app, ["eval", str(run), "--json", "--workers", "0", "--device", "cpu", *flags])


def save_checkpoint(run: Path, state: dict, **fields) -> None:
    recipe = Recipe(dataset="imagefolder", split=None, augment=Augmentation(crop=16), mean_subtract=False)
    torch.save({"model": state, "recipe": recipe.to_json(), **fields}, run / "last.pt")


def test_eval_divides_by_the_std_a_checkpoint_records(run_folder: Path, model: torch.nn.Module,
                                                      png_folder: Path) -> None:
    """The per-channel mean and std recorded beside the weights, as build bakes them: (x / 255 - mean) / std."""
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.05, 0.1, 0.2])
    save_checkpoint(run_folder, model.state_dict(), mean=mean, std=std)
    result = eval_run(run_folder)
    assert result.exit_code == 0, result.output
    labels = load_dataset("imagefolder", png_folder, train=False).labels.tolist()
    wrong = 0
    for path, label in zip(sorted((png_folder / "val").rglob("*.png")), labels, strict=True):
        view = TF.center_crop(TF.resize(read_png(path), [SIDE], antialias=True), [16]).float() / 255
        with torch.no_grad():
            logits = model(((view - mean[:, None, None]) / std[:, None, None])[None])
        wrong += int(logits.argmax() != label)
    assert json.loads(result.stdout)["top1_error"] == wrong / 20


@pytest.mark.parametrize(("field", "value", "what"), [
    ("mean", "0.5,0.5,0.5", "a str, not a C or CxHxW tensor"),
    ("mean", [0.5, 0.5, 0.5], "a list, not a C or CxHxW tensor"),
    ("mean", torch.tensor(0.5), "a scalar floating-point tensor, not a C or CxHxW floating-point one"),
    ("mean", torch.tensor([0.5, float("nan"), 0.5]), "NaN or infinite in float32"),
    ("std", torch.tensor([0.2, 1e-50, 0.2], dtype=torch.float64), "zero or negative in float32"),
    ("std", torch.tensor([0.2, 1e-39, 0.2], dtype=torch.float64), "denormal in float32"),
])
def test_eval_refuses_a_recorded_statistic_that_cannot_be_used(run_folder: Path, model: torch.nn.Module,
                                                               field: str, value: object, what: str) -> None:
    save_checkpoint(run_folder, model.state_dict(), **{field: value})
    result = eval_run(run_folder)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {run_folder / 'last.pt'} records a {field} that is {what}")
    assert "Traceback" not in result.output and result.stdout == ""


def test_eval_refuses_weights_holding_nan_instead_of_giving_an_error_rate(run_folder: Path,
                                                                          model: torch.nn.Module) -> None:
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(run_folder, state)
    result = eval_run(run_folder)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {run_folder / 'last.pt'} holds NaN or infinite values in conv1.weight: the "
                             "weights of a run that diverged, which give no meaningful output\n")


def test_eval_refuses_weights_whose_outputs_overflow_instead_of_giving_an_error_rate(
        run_folder: Path, model: torch.nn.Module) -> None:
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["bn1.bias"].fill_(3e38)  # finite, but every logit, a sum of these, overflows to inf and the softmax to NaN
    state["fc.weight"].fill_(1.0)
    save_checkpoint(run_folder, state)
    result = eval_run(run_folder)
    assert result.exit_code == 1
    assert result.stderr.endswith(f"\nerror: tiny with {run_folder / 'last.pt'} gives NaN or infinite outputs for "
                                  "20 of 20 images, so it has no error rate\n")


def test_eval_refuses_a_runs_mean_image_holding_nan(run_folder: Path, model: torch.nn.Module) -> None:
    """A bare state_dict in a run folder takes the run's mean.pt, checked as a checkpoint's mean is."""
    torch.save(model.state_dict(), run_folder / "last.pt")
    config = json.loads((run_folder / "config.json").read_text())
    config["recipe"]["mean_subtract"] = True
    (run_folder / "config.json").write_text(json.dumps({**config, "mean": "mean.pt"}))
    torch.save(torch.full((3, 16, 16), float("nan")), run_folder / "mean.pt")
    result = eval_run(run_folder)
    assert result.exit_code == 1
    assert result.stderr == f"error: {run_folder / 'mean.pt'} holds a mean image that is NaN or infinite in float32\n"


def test_eval_of_a_run_folder_with_a_brace_in_its_name_reads_the_run(run_folder: Path) -> None:
    """read_spec reads `run{2}/spec.res` as a file, not as spec text; eval takes `run{2}` as the run folder it is."""
    braced = run_folder.rename(run_folder.with_name("run{2}"))
    result = CliRunner().invoke(app, ["eval", str(braced), "--json", "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 20
