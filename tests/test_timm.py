"""specs/timm/: each net as timm 1.0.31 builds it — its state_dict loads strictly and the outputs agree."""

from __future__ import annotations

import pytest
import timm
import torch
from loaded import loaded_from
from torch import nn

import resdsl

pytestmark = pytest.mark.torch

TIMM = ["resnet26", "resnet18d", "resnet26d", "resnet50d", "resnet101d", "resnet50c", "resnet50s", "resnet50_gn",
        "seresnet50", "ecaresnet50d", "skresnet18", "resnetv2_50"]


def _randomise_norms(model: nn.Module) -> None:
    """Random affine parameters and running statistics: timm zero-inits each block's last norm, which would
    hide a wrong residual branch, and unit statistics would hide a misplaced norm."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
            module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.1
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean = torch.randn(module.running_mean.shape, generator=generator) * 0.1
            module.running_var = torch.rand(module.running_var.shape, generator=generator) + 0.5


@pytest.mark.parametrize("name", TIMM)
def test_timm_weights_load_strictly_and_outputs_match(name: str) -> None:
    reference = timm.create_model(name, pretrained=False).eval()
    _randomise_norms(reference)
    network = resdsl.compile(f"timm/{name}")
    model = loaded_from(network, reference)
    assert network.params == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        error = (model(x) - expected).abs().max() / expected.abs().max()
    assert error <= 1e-5


# The wider family, written with loops (Res2Net's slices, split attention's radix), block name patterns
# (RegNet's `s1.b1`), `projects` (Res2Net's pooled last slice) and `if` (RepVGG's identity BN); 64 px keeps them fast.
WIDER = ["res2net50_48w_2s", "res2next50", "resnest26d", "regnetx_004", "regnety_004", "repvgg_a2"]


def _conv_and_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every conv and linear layer in one forward pass, counted by hooks."""
    total = 0

    def conv(module: nn.Conv2d, _, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * module.in_channels // module.groups * kernel

    def linear(module: nn.Linear, _, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear) for m in model.modules()
             if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(x[:1])
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("name", WIDER)
def test_wider_family_loads_strictly_and_matches_outputs_params_and_macs(name: str) -> None:
    reference = timm.create_model(name, pretrained=False).eval()
    _randomise_norms(reference)
    network = resdsl.compile(f"timm/{name}").with_input((3, 64, 64))
    model = loaded_from(network, reference)
    assert network.params == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert network.macs == _conv_and_linear_macs(reference, x)
    with torch.no_grad():
        expected = reference(x)
        error = (model(x) - expected).abs().max() / expected.abs().max()
    assert error <= 1e-5


@pytest.mark.parametrize("name", ["res2net50_48w_2s", "resnest26d", "regnety_004"])
def test_zero_init_residual_zeroes_the_norms_timm_zeroes_in_the_wider_family(name: str) -> None:
    reference = timm.create_model(name, zero_init_last=True)
    model = resdsl.compile(f"timm/{name}").to_torch(zero_init_residual=True)
    zeroed = {name for name, m in reference.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()}
    ours = {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()}
    assert ours == zeroed and ours


def test_zero_init_residual_zeroes_the_norms_timm_zeroes() -> None:
    reference = timm.create_model("seresnet50", zero_init_last=True)
    model = resdsl.compile("timm/seresnet50").to_torch(zero_init_residual=True)
    zeroed = {name for name, m in reference.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()}
    ours = {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()}
    assert ours == zeroed
    assert "layer1.0.bn3" in ours


SK_SILU = """
block sk_basic(width, stride = 1) {
  conv1: selective_kernel width, stride: stride, rd_ratio: 0.125, rd_divisor: 16, act: silu
  conv2.conv: conv 3x3, width
  conv2.bn: batchnorm
  add shortcut
  silu
}
network sk_silu {
  input 3x64x64
  stem { conv1: conv 7x7, 64, stride 2; bn1: batchnorm; silu; maxpool 3x3, stride 2 }
  stages (block: sk_basic, shortcut: B) {
    layer1: 1 x 64
    layer2: 1 x 128, stride 2
    layer3: 1 x 256, stride 2
    layer4: 1 x 512, stride 2
  }
  head { avgpool; fc: linear 10 }
}
"""


def test_selective_kernel_attention_keeps_relu_and_batchnorm_when_the_paths_use_another_act() -> None:
    from timm.models.resnet import ResNet
    from timm.models.sknet import SelectiveKernelBasic

    reference = ResNet(SelectiveKernelBasic, [1, 1, 1, 1], num_classes=10, act_layer=nn.SiLU,
                       block_args={"sk_kwargs": {"rd_ratio": 0.125, "rd_divisor": 16, "split_input": True}}).eval()
    _randomise_norms(reference)
    model = resdsl.compile(SK_SILU).to_torch().eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x)
        assert (model(x) - expected).abs().max() / expected.abs().max() <= 1e-5


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_option_d_is_timms_avg_down_at_any_stride(stride: int) -> None:
    from timm.models.resnet import downsample_avg

    reference = downsample_avg(16, 32, 1, stride=stride).eval()
    _randomise_norms(reference)
    spec = ("network d {\n  input 16x13x13\n"
            f"  stages (block: basic, shortcut: D) {{ layer1: 1 x 32, stride {stride} }}\n}}\n")
    shortcut = resdsl.compile(spec).to_torch().layer1[0].downsample.eval()
    shortcut.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 16, 13, 13, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(shortcut(x), reference(x), atol=1e-6)


def test_zero_init_residual_zeroes_the_last_conv_of_a_pre_activation_unit_as_timm() -> None:
    reference = timm.create_model("resnetv2_50", zero_init_last=True)
    model = resdsl.compile("timm/resnetv2_50").to_torch(zero_init_residual=True)
    zeroed = {name for name, p in reference.named_parameters() if p.dim() > 1 and not p.any()}
    ours = {name for name, p in model.named_parameters() if p.dim() > 1 and not p.any()}
    assert ours == zeroed
    assert "stages.0.blocks.0.conv3.weight" in ours


def test_repvgg_a2_deploys_as_one_conv_per_block_equal_to_timms_training_time_model(tmp_path) -> None:
    """`build` merges RepVGG's 3x3, 1x1 and identity-BN branches: 22 Conv nodes in the ONNX graph (timm's
    `reparameterize_model` gives the same count), and the artifact equals timm's unmerged model."""
    import onnx
    import onnxruntime

    reference = timm.create_model("repvgg_a2", pretrained=False).eval()
    _randomise_norms(reference)
    weights = tmp_path / "a2.pt"
    torch.save(reference.state_dict(), weights)
    out = tmp_path / "a2.onnx"
    resdsl.build("timm/repvgg_a2", backend="onnx", output=out, weights=weights, input_format="float",
                 raw_input=True, input_shape=(3, 64, 64))
    graph = onnx.load(str(out))
    assert sum(node.op_type == "Conv" for node in graph.graph.node) == 22
    assert not any(node.op_type == "BatchNormalization" for node in graph.graph.node)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    actual = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        expected = reference(x)
    assert (actual - expected).abs().max() / expected.abs().max() <= 1e-5
