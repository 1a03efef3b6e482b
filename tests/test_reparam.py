"""Structural re-parameterisation (resdsl.backends.reparam): sums of parallel conv/BN/identity branches become one
conv. Random specs written in the language must keep their function exactly (fp32) with one conv per block left; a
RepVGG-style net builds to ONNX with one Conv per block and matches a hand-written RepVGG block in PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

import resdsl
from resdsl.backends.reparam import reparameterize
from resdsl.cli.app import app

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"

# RepVGG-A's block: 3x3 conv-BN, 1x1 conv-BN and, where the block keeps its input's shape, BN of the input, summed,
# then ReLU. The stage's shortcut option carries the 1x1 branch in both cases and the identity-BN in the `same` one.
REPVGG_LIKE = """
shortcut rep_branches {
  same { conv_1x1: conv 1x1, out_channels; bn_1x1: batchnorm; from input; bn_id: batchnorm; add bn_1x1 }
  changed { conv_1x1: conv 1x1, out_channels, stride stride; bn_1x1: batchnorm }
}

block repvgg(width, stride = 1) {
  conv_3x3: conv 3x3, width, stride stride
  bn_3x3: batchnorm
  add shortcut
  relu
}

network repvgg_like {
  input 3x32x32
  stem { conv1: conv 3x3, 16, stride 2; bn1: batchnorm; relu }
  stages (block: repvgg, shortcut: rep_branches) {
    layer1: 2 x 16
    layer2: 3 x 32, stride 2
  }
  head { avgpool; fc: linear 10 }
}
"""
REPVGG_BLOCKS = 5


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Random running statistics and affine terms on every BatchNorm, so that a wrong merge shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.3, 2.0),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.3, 0.3)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def convs(model: nn.Module) -> int:
    return sum(isinstance(module, nn.Conv2d) for module in model.modules())


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@dataclass(frozen=True)
class RandomBlock:
    """A block summing parallel branches of its input: convs (kernel, with BN or not), BN-only and plain identities."""

    width: int
    stride: int
    groups: int
    convs: tuple[tuple[str, bool], ...]
    norms: int
    identity: bool

    def text(self, name: str) -> str:
        lines, tensors = [], []
        for i, (kernel, norm) in enumerate(self.convs):
            lines += ["from input", f"c{i}: conv {kernel}, width, stride stride, groups {self.groups}"]
            lines += [f"n{i}: batchnorm"] if norm else []
            tensors.append(f"n{i}" if norm else f"c{i}")
        for i in range(self.norms):
            lines += ["from input", f"id{i}: batchnorm"]
            tensors.append(f"id{i}")
        if self.identity:
            lines.append("from input")
        else:
            tensors.pop()  # the last branch is the current tensor
        lines += [f"add {tensor}" for tensor in tensors] + ["relu"]
        body = "\n".join(f"  {line}" for line in lines)
        return f"block {name}(width, stride = 1) {{\n{body}\n}}\n"


@st.composite
def random_blocks(draw: st.DrawFn, channels: int) -> RandomBlock:
    width = draw(st.sampled_from([channels, 4, 8, 12]))
    stride = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([g for g in (1, 2, 4) if channels % g == 0 and width % g == 0]))
    conv_branches = draw(st.lists(st.tuples(st.sampled_from(["1x1", "3x3", "5x5", "1x3", "3x1"]), st.booleans()),
                                  min_size=1, max_size=3))
    keeps_shape = stride == 1 and width == channels
    norms = draw(st.integers(0, 2)) if keeps_shape else 0
    identity = draw(st.booleans()) if keeps_shape else False
    if len(conv_branches) + norms + identity < 2:
        conv_branches.append(("3x3", True))
    return RandomBlock(width, stride, groups, tuple(conv_branches), norms, identity)


@st.composite
def random_specs(draw: st.DrawFn) -> tuple[str, int]:
    """A spec whose stem is conv-BN-ReLU followed by calls of 1-3 random blocks, and the number of blocks."""
    channels = draw(st.sampled_from([4, 8]))
    blocks, layers = [], [f"conv1: conv 3x3, {channels}", "bn1: batchnorm", "relu"]
    for i in range(draw(st.integers(1, 3))):
        block = draw(random_blocks(channels))
        blocks.append(block.text(f"b{i}"))
        layers.append(f"blk{i}: b{i} {block.width}, stride: {block.stride}")
        channels = block.width
    network = (f"network random_branches {{\n  input 3x12x12\n  stem {{ {'; '.join(layers)} }}\n"
               "  head { avgpool; fc: linear 5 }\n}\n")
    return "".join(blocks) + network, len(blocks)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=random_specs(), seed=st.integers(0, 2**16))
def test_merged_branches_compute_the_unmerged_function_with_one_conv_per_block(spec, seed):
    text, blocks = spec
    model = randomise_batchnorm(resdsl.compile(text).to_torch(seed=seed), seed)
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    merged = reparameterize(model)
    with torch.no_grad():
        assert relative_error(merged(x), model(x)) <= 1e-5, text
    assert convs(merged) == 1 + blocks, text  # the stem's conv and one per block
    assert not any(isinstance(m, nn.BatchNorm2d) for m in merged.modules()), text


class Branches(nn.Module):
    """The 1x1 conv-BN branch and, where the shape is kept, the BN-only identity branch of a RepVGG block."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn_1x1 = nn.BatchNorm2d(planes)
        self.bn_id = nn.BatchNorm2d(planes) if inplanes == planes and stride == 1 else None


class RepVggBlock(nn.Module):
    """RepVGG's training-time block (Ding et al. 2021), by hand: relu(bn(conv3x3 x) + bn(conv1x1 x) [+ bn(x)])."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv_3x3 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn_3x3 = nn.BatchNorm2d(planes)
        self.downsample = Branches(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = self.downsample
        y = self.bn_3x3(self.conv_3x3(x)) + branches.bn_1x1(branches.conv_1x1(x))
        if branches.bn_id is not None:
            y = y + branches.bn_id(x)
        return torch.relu(y)


class RepVggLike(nn.Module):
    """REPVGG_LIKE written by hand in PyTorch, with the spec's parameter names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(RepVggBlock(16, 16, 1), RepVggBlock(16, 16, 1))
        self.layer2 = nn.Sequential(RepVggBlock(16, 32, 2), RepVggBlock(32, 32, 1), RepVggBlock(32, 32, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def onnx_ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def build_repvgg_like(tmp_path: Path, *flags: str) -> tuple[Path, nn.Module]:
    spec, weights, out = tmp_path / "repvgg_like.res", tmp_path / "weights.pt", tmp_path / "repvgg_like.onnx"
    spec.write_text(REPVGG_LIKE)
    torch.manual_seed(0)
    reference = randomise_batchnorm(RepVggLike(), seed=2)
    torch.save(reference.state_dict(), weights)
    result = run("build", spec, "--backend", "onnx", "-o", out, "--weights", weights, "--raw-input", "--batch", 2,
                 *flags)
    assert result.exit_code == 0, result.output
    return out, reference


def test_repvgg_like_onnx_build_has_one_conv_per_block_and_matches_the_hand_written_net(tmp_path):
    out, reference = build_repvgg_like(tmp_path)
    ops = onnx_ops(out)
    assert ops.count("Conv") == 1 + REPVGG_BLOCKS and "BatchNormalization" not in ops
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    actual = torch.from_numpy(np.asarray(session.run(None, {"input": x.numpy()})[0]))
    with torch.no_grad():
        assert relative_error(actual, reference(x)) <= 1e-5


def test_no_fold_keeps_the_training_graphs_branches_and_norms(tmp_path):
    out, _ = build_repvgg_like(tmp_path, "--no-fold")
    ops = onnx_ops(out)
    assert ops.count("Conv") == 1 + 2 * REPVGG_BLOCKS  # a 3x3 and a 1x1 per block
    # torch.onnx folds each conv -> BN pair itself, but the identity-BNs of the 4 blocks that keep their shape stay
    assert ops.count("BatchNormalization") == 4


def test_a_resnets_residual_sums_are_left_alone_as_their_branches_read_different_tensors():
    model = randomise_batchnorm(resdsl.compile(SPECS / "cifar20.res").to_torch(seed=0), seed=3)
    merged = reparameterize(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    assert convs(merged) == 19  # 6n+1 convs of ResNet-20 (n = 3), the fc aside
    with torch.no_grad():
        assert relative_error(merged(x), model(x)) <= 1e-5


def test_to_torch_deploy_gives_the_merged_eval_module_with_one_conv_per_block():
    network = resdsl.compile(REPVGG_LIKE)
    deployed = network.to_torch(seed=0, deploy=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    assert not deployed.training and convs(deployed) == 1 + REPVGG_BLOCKS
    with torch.no_grad():
        assert relative_error(deployed(x), network.to_torch(seed=0).eval()(x)) <= 1e-5


class SharedConv(nn.Module):
    """One conv applied twice: in a sum with its input, and again after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x) + x)


def test_a_conv_used_twice_is_not_merged_into_one_sum():
    model = SharedConv().eval()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert relative_error(reparameterize(model)(x), model(x)) <= 1e-6
