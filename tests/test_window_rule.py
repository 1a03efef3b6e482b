"""Windowed ops (conv, max/avg pool) take exactly the inputs PyTorch takes, with PyTorch's output size: a tiny
input through padded stride-2 layers is valid, and what PyTorch refuses is refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import resdsl
from resdsl.ir.ops import ShapeError
from resdsl.ir.ops.base import window

pytestmark = pytest.mark.torch


@st.composite
def windows(draw):
    """A conv (dilated, padding up to half its reach) or a ceil-mode pool (padding up to half its kernel)."""
    kernel, ceil = draw(st.integers(1, 7)), draw(st.booleans())
    dilation = 1 if ceil else draw(st.integers(1, 3))
    reach = dilation * (kernel - 1) + 1
    return (draw(st.integers(1, 12)), kernel, draw(st.integers(1, 4)), draw(st.integers(0, reach // 2)), dilation,
            ceil)


def _torch_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int | None:
    x = torch.zeros(1, 1, size, size)
    try:
        if ceil:
            return torch.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True).shape[-1]
        return torch.nn.functional.conv2d(x, torch.zeros(1, 1, kernel, kernel), None, stride, padding,
                                          dilation).shape[-1]
    except RuntimeError:
        return None


@settings(max_examples=300, deadline=None)
@given(windows())
def test_window_size_and_refusal_follow_pytorch(case):
    size, kernel, stride, padding, dilation, ceil = case
    expected = _torch_size(size, kernel, stride, padding, dilation, ceil)
    try:
        got = window("conv", (1, size, size), (kernel, kernel), (stride, stride), (padding, padding),
                     (dilation, dilation), ceil)[0]
    except ShapeError:
        got = None
    assert got == expected


@pytest.mark.parametrize("name", ["resnet50", "timm/resnet50d", "torchvision/resnet18", "timm/ecaresnet50d"])
def test_a_3x1x1_input_through_padded_stride_2_layers_is_accepted_and_runs(name):
    net = resdsl.compile(name).with_input((3, 1, 1))
    model = net.to_torch(seed=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 1, 1)).shape == (1, *net.output_shape)


def test_a_large_kernel_that_fits_its_padded_input_is_accepted():
    spec = "network t {\n  input 3x32x32\n  stem { conv 33x33, 4, padding 16 }\n  head { avgpool; fc: linear 2 }\n}\n"
    assert resdsl.compile(spec).params == 3 * 33 * 33 * 4 + 4 * 2 + 2
