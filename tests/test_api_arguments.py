"""The Python API checks its arguments as the CLI does: each mistake is a UsageError/ValueError naming the argument."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import resdsl

CIFAR = "cifar_resnet"  # param n = 3: ResNet-20
TINY = "network tiny {\n  input 1x8x8\n  stem {\n    conv 3x3, 4\n  }\n  head {\n    avgpool\n    flatten\n" \
       "    linear 2\n  }\n}\n"


@pytest.mark.parametrize(("value", "shown"), [(None, "None"), ("3", "'3' (str)"), ([1], "(1,) (tuple)"),
                                              (object, "<class 'object'> (type)")],
                         ids=["none", "string", "one_element_list", "a_class"])
def test_a_param_value_that_is_no_value_is_refused_by_name(value, shown):
    pattern = rf"^compile\(\.\.\., n=\.\.\.\): {re.escape(shown)} is not a param value"
    with pytest.raises(resdsl.UsageError, match=pattern):
        resdsl.compile(CIFAR, n=value)


def test_a_param_given_none_never_compiles_to_a_network_without_blocks():
    with pytest.raises(ValueError, match="None is not a param value"):
        resdsl.compile(CIFAR, n=None)


def test_a_float_param_beyond_the_bound_is_refused():
    with pytest.raises(resdsl.UsageError, match=r"n=\.\.\.\): 1e\+40 is not a finite number within ±1e30"):
        resdsl.compile(CIFAR, n=1e40)


def test_a_param_the_spec_does_not_declare_is_named_as_python_wrote_it():
    with pytest.raises(resdsl.UsageError, match=r"^compile\(\.\.\., m=\.\.\.\): the spec declares no param 'm' "
                                                r"\(declared: n\)$"):
        resdsl.compile(CIFAR, m=3)


def test_an_int_param_compiles_the_papers_depth():
    assert resdsl.compile(CIFAR, n=5).params == 464_154  # PAPER.md Table 6, ResNet-32


def test_non_integer_channels_are_refused_at_the_layer_that_reads_them():
    spec = "param w = 16\nnetwork t {\n  input 3x8x8\n  stem { conv 3x3, w }\n  head { avgpool; fc: linear 2 }\n}\n"
    with pytest.raises(resdsl.SpecError, match=r"conv argument 'out': expected an integer, got 16\.5"):
        resdsl.compile(spec, w=16.5)


@pytest.mark.parametrize("shape", ["3x3", (3.5, 32, 32), (True, 32, 32), (3, 32), (0, 32, 32), "x3x3", None],
                         ids=["two_dims_text", "float", "bool", "two_dims", "zero", "bad_text", "none"])
def test_with_input_refuses_a_shape_that_is_not_three_positive_integers(shape):
    with pytest.raises(ValueError, match=r"^with_input: the shape must be three positive integers C, H, W"):
        resdsl.compile(CIFAR).with_input(shape)


def test_with_input_takes_the_shape_as_the_language_writes_it():
    assert resdsl.compile(CIFAR).with_input("1x28x28").input_shape == (1, 28, 28)


@pytest.mark.torch
@pytest.mark.parametrize(("features", "message"), [
    ("layer1", r"takes a list of layer or group names such as \['layer1', 'layer2'\], got 'layer1'"),
    ([1], "every name must be a string such as 'layer1', got 1"),
    (["layer1", "layer2", "layer1"], "'layer1' is named twice; name each feature once"),
    ([], "needs at least one name"),
], ids=["a_string", "an_int", "duplicated", "empty"])
def test_to_torch_features_must_be_distinct_names(features, message):
    with pytest.raises(ValueError, match=message):
        resdsl.compile(CIFAR).to_torch(features=features)


def test_compile_of_an_empty_string_does_not_read_the_current_folder() -> None:
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile("")
    assert "directory" not in str(caught.value)


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_to_torch_refuses_a_seed_the_cli_refuses_by_name(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        resdsl.compile(TINY).to_torch(seed=seed)  # type: ignore[arg-type]


@pytest.mark.torch
def test_a_numpy_integer_seed_draws_the_weights_of_the_same_int_seed_as_torch_takes_it(tmp_path: Path) -> None:
    import numpy as np
    import torch

    network = resdsl.compile(TINY)
    torch.manual_seed(7)
    reference = network.to_torch()  # torch's own generator seeded with 7, as torchvision's models are drawn
    drawn = network.to_torch(seed=np.int64(7))  # type: ignore[arg-type]
    assert all(torch.equal(value, drawn.state_dict()[key]) for key, value in reference.state_dict().items())
    built = resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", seed=np.int64(7))  # type: ignore
    assert built.path.exists()


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_build_refuses_a_seed_the_cli_refuses_as_a_usage_error(seed: object, tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="seed"):
        resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", seed=seed)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
@pytest.mark.parametrize(("argument", "value"), [("batch", 1.5), ("batch", (1, 2)), ("mean", "0.5"),
                                                 ("features", "stem")],
                         ids=["float_batch", "pair_batch", "string_mean", "string_features"])
def test_build_names_an_argument_of_the_wrong_type(argument: str, value: object, tmp_path: Path) -> None:
    """Not "cannot unpack non-iterable float object", or `features="stem"` read as the names 's', 't', ..."""
    with pytest.raises(resdsl.UsageError, match=argument) as caught:
        wrong: dict[str, Any] = {argument: value}
        resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", **wrong)
    assert "'s'" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["numpy_float32", "torch_tensor"])
def test_build_takes_mean_and_std_as_an_array_of_float32s(kind: str, tmp_path: Path) -> None:
    """Statistics computed over a dataset come as float32 arrays; float() takes their elements, as it always did."""
    import json

    import numpy as np
    import torch

    mean, std = (np.array([value], dtype=np.float32) for value in (0.5, 0.25))
    given = (mean, std) if kind == "numpy_float32" else (torch.from_numpy(mean), torch.from_numpy(std))
    resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", mean=given[0], std=given[1])  # type: ignore
    sidecar = json.loads((tmp_path / "tiny.pt2.json").read_text())
    assert (sidecar["mean"]["values"], sidecar["std"]["values"]) == ([0.5], [0.25])


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_train_refuses_a_seed_the_cli_refuses_before_making_the_run(seed: object, tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="seed"):
        resdsl.train(TINY, out=tmp_path / "run", data=tmp_path, seed=seed,  # type: ignore[arg-type]
                     settings={"dataset": "fashion-mnist", "iterations": 1})
    assert not (tmp_path / "run").exists()


@pytest.mark.torch
def test_train_to_an_empty_out_is_refused_not_run_in_the_current_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out ""` is a usage error; `out=""` was Path(""), the current folder, which filled with a run."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(resdsl.UsageError, match="out"):
        resdsl.train(TINY, out="", data=tmp_path, settings={"dataset": "fashion-mnist", "iterations": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_train_refuses_a_negative_number_of_workers_as_the_cli_does(tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="workers"):
        resdsl.train(TINY, out=tmp_path / "run", data=tmp_path, workers=-1,
                     settings={"dataset": "fashion-mnist", "iterations": 1})
    assert not (tmp_path / "run").exists()
