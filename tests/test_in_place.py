"""The lowering writes in place (`nn.ReLU(inplace=True)`, `+=`) only into tensors no one else reads:
never into a view, a tensor a pass-through op hands on, or the caller's input. Checked against torch by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import resdsl

pytestmark = pytest.mark.torch


def _module(stem: str) -> torch.nn.Module:
    return resdsl.compile(f"network n {{\n  input 3x8x8\n  stem {{ {stem} }}\n}}\n").to_torch(seed=0).eval()


@pytest.mark.parametrize("between", [
    "slice_channels 0, 16",
    "subsample 1",
    "avgpool 1, stride 1, padding 0",
    "maxpool 1x1, stride 1",
    "identity",
    "dropout 0",
])
def test_relu_after_a_view_or_pass_through_leaves_the_tensor_it_reads_intact(between: str):
    model = _module(f"a: conv 3x3, 16; {between}; relu; add a")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = F.conv2d(x, model.a.weight, model.a.bias, padding=1)
        assert torch.allclose(model(x), torch.relu(a) + a, atol=1e-6)


def test_add_into_a_view_leaves_its_base_intact():
    model = _module("a: conv 3x3, 16; b: conv 3x3, 16; from a; subsample 1; add b; concat a")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = F.conv2d(x, model.a.weight, model.a.bias, padding=1)
        b = F.conv2d(a, model.b.weight, model.b.bias, padding=1)
        assert torch.allclose(model(x), torch.cat([a + b, a], 1), atol=1e-6)


def test_the_callers_input_is_never_written():
    model = _module("relu; c: conv 3x3, 4")
    x = torch.randn(1, 3, 8, 8)
    before = x.clone()
    model(x)
    assert torch.equal(x, before)


SPLIT_BLOCK = """
block split(width, stride = 1) {
  slice_channels 0, width // 2
  y1: conv 3x3, width // 2
  from input
  slice_channels width // 2, width
  add y1
  y2: conv 3x3, width // 2
  concat y1
  bn: batchnorm
  add shortcut
  relu
}
network n {
  input 3x8x8
  stem { conv1: conv 3x3, 16; bn1: batchnorm; relu }
  stages (block: split, shortcut: B) { layer1: 1 x 16 }
  head { avgpool; fc: linear 10 }
}
"""


def test_a_block_that_splits_its_input_computes_the_split_and_trains():
    model = resdsl.compile(SPLIT_BLOCK).to_torch(seed=0)
    block = model.layer1[0]
    x = torch.randn(2, 16, 8, 8)
    block.eval()
    with torch.no_grad():
        y1 = F.conv2d(x[:, :8], block.y1.weight, padding=1)
        y2 = F.conv2d(x[:, 8:] + y1, block.y2.weight, padding=1)
        assert torch.allclose(block(x), torch.relu(block.bn(torch.cat([y2, y1], 1)) + x), atol=1e-5)
    model.train()
    model(torch.randn(2, 3, 8, 8)).sum().backward()


GATES = {"sigmoid": torch.sigmoid, "softmax": lambda t: torch.softmax(t, 1),
         "softmax branches 2": lambda t: torch.softmax(t.unflatten(1, (2, -1)), 1).flatten(1, 2)}


@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("after", ["add a", "relu"])
def test_a_gate_whose_backward_reads_its_output_is_not_overwritten_by_the_op_after_it(gate: str, after: str):
    model = resdsl.compile(f"network n {{\n  input 3x8x8\n  stem {{ a: conv 3x3, 4; {gate}; {after} }}\n}}\n"
                           ).to_torch(seed=0)
    x = torch.randn(2, 3, 8, 8)
    model(x).square().sum().backward()
    weight = model.a.weight.detach().clone().requires_grad_()
    a = F.conv2d(x, weight, padding=1)
    gated = GATES[gate](a)
    (gated + a if after == "add a" else torch.relu(gated)).square().sum().backward()
    assert weight.grad is not None and model.a.weight.grad is not None
    torch.testing.assert_close(model.a.weight.grad, weight.grad, atol=1e-5, rtol=1e-5)
