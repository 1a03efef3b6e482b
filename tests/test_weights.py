"""resdsl.weights: torchvision/timm/DDP state_dicts into generated modules, and one true sentence for every misfit."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

import resdsl
from resdsl.weights import WeightsError, load_weights, read_weights

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _resnet18() -> torch.nn.Module:
    return resdsl.compile(str(SPECS / "torchvision" / "resnet18.res")).to_torch(seed=0)


def _cifar20(classes: int = 10) -> torch.nn.Module:
    text = (SPECS / "cifar_resnet.res").read_text().replace("fc: linear 10", f"fc: linear {classes}")
    return resdsl.compile(text, n=3).to_torch(seed=0)


def _saved(tmp_path: Path, content: object, name: str = "weights.pt") -> Path:
    torch.save(content, tmp_path / name)
    return tmp_path / name


def test_torchvision_weights_give_torchvisions_outputs(tmp_path: Path):
    reference = torchvision.models.resnet18().eval()
    model = _resnet18().eval()
    assert load_weights(model, read_weights(_saved(tmp_path, reference.state_dict())), "resnet18") == []
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-5)


# DistributedDataParallel(torch.compile(model)) and torch.compile(DistributedDataParallel(model))
@pytest.mark.parametrize("prefix", ["module._orig_mod.", "_orig_mod.module."])
def test_ddp_and_compile_prefixes_are_stripped_in_either_order(tmp_path: Path, prefix: str):
    state = torchvision.models.resnet18().state_dict()
    prefixed = {f"{prefix}{key}": value for key, value in state.items()}
    weights = read_weights(_saved(tmp_path, prefixed))
    assert list(weights.state) == list(state)


def test_a_timm_style_checkpoint_without_batchnorm_counters_loads(tmp_path: Path):
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if "num_batches" not in k}
    weights = read_weights(_saved(tmp_path, {"state_dict": state, "epoch": 90}))
    assert weights.checkpoint == {"epoch": 90}
    model = _resnet18()
    load_weights(model, weights, "resnet18")
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])


def test_head_of_another_size_is_reinitialised_on_request(tmp_path: Path):
    source = _cifar20(10).state_dict()
    model = _cifar20(100)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    reset = load_weights(model, read_weights(_saved(tmp_path, {"model": source})), "cifar20", new_head=True)
    assert reset == ["fc.weight", "fc.bias"]
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], initial[key]) for key in reset)
    assert all(torch.equal(loaded[key], source[key]) for key in loaded if key not in reset)


def test_head_of_another_size_is_refused_by_default(tmp_path: Path):
    weights = read_weights(_saved(tmp_path, _cifar20(10).state_dict()))
    with pytest.raises(WeightsError) as raised:
        load_weights(_cifar20(100), weights, "cifar20")
    assert raised.value.head_only
    assert str(raised.value) == (f"{tmp_path / 'weights.pt'} does not fit cifar20: wrong shape for fc.weight "
                                 "(10x64 in the file, 100x64 here), fc.bias (10 in the file, 100 here)")


def test_other_misfits_are_named_in_one_sentence(tmp_path: Path):
    state = dict(_cifar20().state_dict())
    del state["layer3.2.bn2.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(WeightsError) as raised:
        load_weights(_cifar20(), read_weights(_saved(tmp_path, state)), "cifar20", new_head=True)
    assert not raised.value.head_only
    assert str(raised.value) == (f"{tmp_path / 'weights.pt'} does not fit cifar20: missing layer3.2.bn2.weight; "
                                 "unexpected extra.weight; wrong shape for conv1.weight (16x1x3x3 in the file, "
                                 "16x3x3x3 here)")


def test_names_from_another_naming_scheme_are_shown(tmp_path: Path):
    state = {f"backbone.{key}": value for key, value in _cifar20().state_dict().items()}
    state["head.weight"] = torch.zeros(1)  # not every key has the prefix, so none is stripped
    with pytest.raises(WeightsError, match=r"no name in common \(the file has names like 'backbone.conv1.weight', "
                                           r"the network like 'conv1.weight'\)"):
        load_weights(_cifar20(), read_weights(_saved(tmp_path, state)), "cifar20")


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = _saved(tmp_path, {"model": {"conv1.weight": torch.zeros(1)}, "extra": Payload()})
    with pytest.raises(WeightsError) as raised:
        read_weights(path)
    assert str(raised.value) == (
        f"{path} is not a plain state_dict: it holds the Python object {os.system.__module__}.system, which resdsl "
        "does not unpickle (nothing in the file was run); resdsl loads tensors only, so save the weights with "
        "torch.save(model.state_dict(), path)")
    assert not marker.exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"just some text", "is not a PyTorch weights file (neither a torch.save archive nor a pickle)"),
    (pickle.dumps({"conv1.weight": [0.0]}, protocol=4), "is a plain Python pickle, not a file saved with torch.save"),
    (b"PK\x03\x04 the start of a zip archive", "is a torch.save archive that is truncated or damaged"),
    (None, "holds neither a state_dict (names to tensors) nor a checkpoint with one under 'model' or 'state_dict'"),
])
def test_files_that_are_not_weights_are_refused(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save({"model": [1, 2, 3]}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as raised:
        read_weights(path)
    assert message in str(raised.value) and "weights_only" not in str(raised.value)


def test_a_run_directory_is_refused_with_its_checkpoint_named(tmp_path: Path):
    _saved(tmp_path, {}, "last.pt")
    with pytest.raises(WeightsError, match=rf"^{tmp_path} is a directory, not a weights file \(did you mean "
                                           rf"{tmp_path / 'last.pt'}\?\)$"):
        read_weights(tmp_path)
