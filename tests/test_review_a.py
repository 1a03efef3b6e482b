"""Adversarial review (rev5a): behaviours checked against hand-written torch references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import resdsl

pytestmark = pytest.mark.torch


def _stem(layers: str) -> torch.nn.Module:
    return resdsl.compile(f"network n {{\n  input 3x8x8\n  stem {{ {layers} }}\n}}\n").to_torch(seed=0)


GATES = {"sigmoid": torch.sigmoid, "softmax": lambda t: torch.softmax(t, 1),
         "softmax branches 2": lambda t: torch.softmax(t.unflatten(1, (2, -1)), 1).flatten(1, 2)}


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("after", ["add a", "relu"])
def test_an_op_after_a_gate_whose_backward_reads_its_output_trains_as_torch(gate: str, after: str) -> None:
    """sigmoid's and softmax's backward read their output: writing it in place (`+=`, ReLU(inplace)) made
    backward() raise 'modified by an inplace operation'."""
    model = _stem(f"a: conv 3x3, 4; {gate}; {after}")
    x = torch.randn(2, 3, 8, 8)
    model(x).square().sum().backward()
    weight = model.a.weight.detach().clone().requires_grad_()
    a = F.conv2d(x, weight, padding=1)
    gated = GATES[gate](a)
    (gated + a if after == "add a" else torch.relu(gated)).square().sum().backward()
    assert weight.grad is not None and model.a.weight.grad is not None
    assert torch.allclose(model.a.weight.grad, weight.grad, atol=1e-5)


def test_feature_reduction_is_the_strides_product_as_timms_at_an_input_not_a_multiple_of_32() -> None:
    """feature_info's reduction was input height // feature height: 4, 7, 14, 25 at 100x100 (31 for layer4 at
    600 px), where timm's (a feature map's stride, which FPN-style necks read) is 4, 8, 16, 32 at any size."""
    import timm

    reference = timm.create_model("resnet50d", features_only=True, out_indices=(1, 2, 3, 4))
    network = resdsl.compile("timm/resnet50d").with_input((3, 100, 100))
    model = network.to_torch(seed=0, features=["layer1", "layer2", "layer3", "layer4"])
    assert [f.reduction for f in model.feature_info] == reference.feature_info.reduction()


def test_weights_of_a_compiled_ddp_model_load_as_the_docs_promise(tmp_path) -> None:
    """`torch.compile(DistributedDataParallel(model)).state_dict()` names `_orig_mod.module.conv1.weight`;
    docs/deploy.md says both prefixes are stripped, but only `_orig_mod.` was (in order: `module.`, then
    `_orig_mod.`), leaving `module.conv1.weight`: 'no name in common'."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resdsl.weights import load_weights, read_weights

    network = resdsl.compile("network n {\n  input 3x8x8\n  stem { conv1: conv 3x3, 4; bn1: batchnorm }\n}\n")
    source = network.to_torch(seed=1)
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    try:
        state = torch.compile(DistributedDataParallel(source)).state_dict()
    finally:
        dist.destroy_process_group()
    assert next(iter(state)).startswith("_orig_mod.module.")  # torch's own naming, the reference
    torch.save(state, tmp_path / "w.pt")
    target = network.to_torch(seed=2)
    load_weights(target, read_weights(tmp_path / "w.pt"), network.name)
    assert all(torch.equal(value, target.state_dict()[key]) for key, value in source.state_dict().items())
