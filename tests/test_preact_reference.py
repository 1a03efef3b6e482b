"""The pre-activation zoo against the papers' reference code: exact parameter counts and the same function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resdsl

pytestmark = pytest.mark.torch


class ReferenceUnit(nn.Module):
    """`bottleneck(nInputPlane, nOutputPlane, stride)` of KaimingHe/resnet-1k-layers, resnet-pre-act.lua."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, stride, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))  # in the Lua code: inside `convs` (identity units) or the common `block`
        branch = self.conv3(F.relu(self.bn3(self.conv2(F.relu(self.bn2(self.conv1(pre)))))))
        if self.shortcut is None:  # "most Residual Units have this shape": the raw input is added
            return branch + x
        return branch + self.shortcut(pre)  # "Residual Units for increasing dimensions"


class ReferenceNet(nn.Module):
    """The Lua createModel for CIFAR-10: 9n+2 layers, stages of 64/128/256, final BN-ReLU, 8x8 pool, fc."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        planes = [(16, 64, 1), (64, 128, 2), (128, 256, 2)]
        self.stages = nn.Sequential(*(nn.Sequential(ReferenceUnit(cin, cout, stride),
                                                    *(ReferenceUnit(cout, cout, 1) for _ in range(n - 1)))
                                      for cin, cout, stride in planes))
        self.bn = nn.BatchNorm2d(256)
        self.fc = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.conv(x))))
        return self.fc(F.avg_pool2d(x, 8).flatten(1))


def test_preact164_and_1001_have_the_authors_parameter_counts():
    assert resdsl.compile("preact/preact164").params == 1_703_258  # PAPER.md
    assert resdsl.compile("preact/preact1001").params == 10_327_706


def test_wrn28_10_has_the_reference_codes_parameter_count():
    assert resdsl.compile("wrn28_10").params == 36_479_194  # PAPER.md: the WRN code shares the pre-activation


def test_preact_bottleneck_net_computes_the_authors_function():
    reference = ReferenceNet(n=2).eval()
    generator = torch.Generator().manual_seed(0)
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):  # random statistics, so a misplaced norm cannot hide
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
            module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.1
            module.running_mean = torch.randn(module.running_mean.shape, generator=generator) * 0.1
            module.running_var = torch.rand(module.running_var.shape, generator=generator) + 0.5
    model = resdsl.compile("preact/preact164", n=2).to_torch(seed=0).eval()
    ours = model.state_dict()
    theirs = reference.state_dict()
    assert [tuple(t.shape) for t in ours.values()] == [tuple(t.shape) for t in theirs.values()]
    model.load_state_dict(dict(zip(ours, theirs.values(), strict=True)))
    x = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
