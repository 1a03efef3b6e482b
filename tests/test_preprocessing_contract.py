"""One preprocessing contract: the mean, std, input (crop) and input format a checkpoint records are used the same
way by `resdsl.build` and `resdsl.evaluate`, each checked against `(images / 255 - mean) / std` computed by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

import resdsl
from resdsl.recipe import Recipe
from resdsl.weights import WeightsError

pytestmark = pytest.mark.torch

TINY32 = """\
network tiny {
  input 3x32x32
  stem { conv1: conv 3x3, 6, stride 2; bn1: batchnorm; relu }
  head { avgpool; fc: linear 10 }
}
"""
MEAN = torch.tensor([0.30, 0.45, 0.60])
STD = torch.tensor([0.05, 0.50, 2.00])  # far from 1, so a consumer that ignored it would rank classes otherwise
TRAINED = [3, 16, 16]  # the crop the weights were trained at; the spec says 32x32


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return resdsl.compile(TINY32).to_torch(seed=5).eval()


@pytest.fixture
def checkpoint(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A checkpoint of an image-folder run whose recipe has no crop: the recorded input alone says 16x16."""
    (tmp_path / "tiny.res").write_text(TINY32)
    recipe = Recipe(dataset="imagefolder", split=None, augment=None, mean_subtract=False)
    torch.save({"model": model.state_dict(), "mean": MEAN, "std": STD, "input": TRAINED,
                "recipe": recipe.to_json()}, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def by_hand(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's output for uint8 `images`, normalised as training did."""
    with torch.no_grad():
        return model((images.float() / 255 - MEAN[:, None, None]) / STD[:, None, None])


def read_png(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


def test_build_bakes_the_recorded_mean_and_std_at_the_recorded_input(checkpoint: Path, model: torch.nn.Module):
    import onnxruntime

    result = resdsl.build(checkpoint.parent / "tiny.res", "onnx", checkpoint.parent / "tiny.onnx",
                          weights=checkpoint, input_format="uint8", batch=4)
    images = torch.randint(0, 256, (4, *TRAINED), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    assert session.get_inputs()[0].shape == [4, *TRAINED]
    assert np.allclose(output, by_hand(model, images).numpy(), atol=1e-5)


def test_evaluate_normalises_with_the_recorded_mean_and_std_at_the_recorded_input(checkpoint: Path,
                                                                                  model: torch.nn.Module):
    """Image i goes in the class the hand computation ranks (i mod 7)-th, so the error rates are known: top-1
    the share of i mod 7 != 0, top-5 of i mod 7 >= 5; any other normalisation ranks otherwise."""
    from PIL import Image

    images = torch.randint(0, 256, (28, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    views = torch.stack([TF.center_crop(TF.resize(image, [18], antialias=True), [16]) for image in images])
    ranked = by_hand(model, views).argsort(1, descending=True)
    with torch.no_grad():
        ranked_without_std = model(views.float() / 255 - MEAN[:, None, None]).argsort(1, descending=True)
    root = checkpoint.parent / "images"
    for split, chosen in (("train", range(10)), ("val", range(len(images)))):
        for i in chosen:
            label = int(ranked[i, i % 7]) if split == "val" else i
            (root / split / f"n{label:08d}").mkdir(parents=True, exist_ok=True)
            pixels = images[i % len(images)].permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(root / split / f"n{label:08d}" / f"{i}.png")
    assert not torch.equal(ranked[:, :5], ranked_without_std[:, :5])  # a consumer ignoring the std would show
    result = resdsl.evaluate(checkpoint.parent / "tiny.res", checkpoint, data=root, device="cpu", workers=0)
    assert result.input == tuple(TRAINED)
    ranks = [i % 7 for i in range(len(images))]
    assert result.top1_error == pytest.approx(sum(r != 0 for r in ranks) / len(ranks))
    assert result.top5_error == pytest.approx(sum(r >= 5 for r in ranks) / len(ranks))


def test_build_and_evaluate_refuse_an_input_format_resdsl_does_not_train_with(tmp_path: Path, checkpoint: Path,
                                                                              png_folder: Path):
    saved = torch.load(checkpoint, weights_only=True)
    torch.save({**saved, "input_format": "float"}, checkpoint)
    sentence = (f"{checkpoint} records an input_format 'float', and resdsl trains on uint8 images only (0-255, "
                "divided by 255)")
    with pytest.raises(WeightsError, match=re.escape(sentence)):
        resdsl.build(tmp_path / "tiny.res", "onnx", tmp_path / "tiny.onnx", weights=checkpoint)
    with pytest.raises(WeightsError, match=re.escape(sentence)):
        resdsl.evaluate(tmp_path / "tiny.res", checkpoint, data=png_folder, device="cpu", workers=0)
    assert not (tmp_path / "tiny.onnx").exists()


@pytest.mark.parametrize(("value", "what"), [([3, 16], r"\[3, 16\]"), ("3x16x16", "'3x16x16'"),
                                             ([3, 0, 16], r"\[3, 0, 16\]")])
def test_a_recorded_input_that_is_not_a_shape_is_refused_in_one_sentence(tmp_path: Path, checkpoint: Path,
                                                                         value: object, what: str):
    saved = torch.load(checkpoint, weights_only=True)
    torch.save({**saved, "input": value}, checkpoint)
    with pytest.raises(WeightsError, match=f"records an input that is {what}, not CxHxW"):
        resdsl.build(tmp_path / "tiny.res", "onnx", tmp_path / "tiny.onnx", weights=checkpoint)


def test_train_records_the_preprocessing_that_build_and_evaluate_read(tiny_workspace: Path, tmp_path: Path):
    """tiny.res subtracts the per-pixel mean of its training images (all 256 with no split; 1x12x12, computed here
    by hand)."""
    import onnxruntime

    from resdsl.weights import Preprocessing, preprocessing, read_weights

    run = resdsl.train(tiny_workspace / "tiny.res", out=tmp_path / "run", data=tiny_workspace / "data",
                       settings={"iterations": 4, "split": "0"}, checkpoint_every=4, eval_every=100, device="cpu")
    assert run.out == tmp_path / "run" and not run.interrupted
    pixels = (tiny_workspace / "data" / "train-images-idx3-ubyte").read_bytes()[16:]
    mean = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(256, 1, 12, 12).double().mean(0) / 255
    recorded = preprocessing(read_weights(run.out / "last.pt"))
    assert torch.allclose(recorded.mean.double(), mean, atol=1e-6)
    assert recorded == Preprocessing(mean=recorded.mean, std=None, input=(1, 12, 12), input_format="uint8")

    built = resdsl.build(run.out / "spec.res", "onnx", tmp_path / "tiny.onnx", weights=run.out / "last.pt",
                         input_format="uint8", batch=2)
    model = resdsl.compile(run.out / "spec.res").to_torch().eval()
    model.load_state_dict(torch.load(run.out / "last.pt", weights_only=True)["model"])
    images = torch.randint(0, 256, (2, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    session = onnxruntime.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        expected = model((images.double() / 255 - mean).float())
    assert np.allclose(output, expected.numpy(), atol=1e-4)
    assert resdsl.evaluate(run.out, device="cpu").input == (1, 12, 12)
