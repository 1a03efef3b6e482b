"""The PyTorch backend against torchvision, hand-written PyTorch, PAPER.md and hand counts."""

from __future__ import annotations

import copy
import math
import operator
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from loaded import loaded_from
from torch import fx, nn
from tree_values import record_values

import resdsl
from resdsl import backends
from resdsl.backends import pytorch
from resdsl.diagnostics import SpecError
from resdsl.ir import ops
from resdsl.ir.graph import inputs

pytestmark = pytest.mark.torch

SPECS = Path(resdsl.__file__).resolve().parent.parent / "specs"
TORCHVISION = sorted(p.stem for p in (SPECS / "torchvision").glob("*.res"))
CIFAR_ZOO = ["cifar20", "cifar32", "cifar44", "cifar56", "cifar110", "cifar_plain20", "cifar_plain56",
             "cifar_plain110", "preact/preact110", "preact/preact164", "wrn28_10"]
IMAGENET_ZOO = ["resnet18", "resnet34", "resnet34b", "resnet34c", "resnet50", "plain18", "plain34"]


def _model(spec: str, **options: object) -> pytorch.NetworkModule:
    return resdsl.compile(SPECS / f"{spec}.res").to_torch(**options)


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _projection(cin: int, cout: int) -> int:
    """A 1x1 conv without bias plus its BatchNorm (weight and bias)."""
    return cin * cout + 2 * cout


def _assert_shapes_match_ir(network: resdsl.Network, model: nn.Module) -> None:
    model.eval()
    with torch.no_grad():
        values = record_values(model, torch.randn(2, *network.input_shape))
    graph = network.graph
    for node in graph:
        op = graph.nodes[node].op.name
        if op in ("input", "output"):
            continue
        if node in values:
            assert tuple(values[node].shape[1:]) == graph.nodes[node].shape, node
        else:  # only pass-through ops have no value of their own
            assert op in ("identity", "dropout", "avgpool", "maxpool"), node
            assert graph.nodes[node].shape == graph.nodes[inputs(graph, node)[0]].shape, node
    assert tuple(values[graph.output].shape[1:]) == network.output_shape


# --- parity with torchvision -------------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_load_and_outputs_match(name: str) -> None:
    reference = getattr(torchvision.models, name)().eval()
    model = loaded_from(resdsl.compile(SPECS / "torchvision" / f"{name}.res"), reference)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_train_mode_step_matches_torchvision() -> None:
    reference = torchvision.models.resnet18()
    model = _model("torchvision/resnet18")
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model(x).square().mean().backward()
    reference(x).square().mean().backward()
    torch.testing.assert_close(model.state_dict(), reference.state_dict(), rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in reference.named_parameters()}
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


# --- shapes and parameter counts against the IR ------------------------------------------

BLOCKS = ["basic", "bottleneck", "bottleneck_v1_5", "preact_basic", "preact_bottleneck", "plain_basic"]
SHORTCUTS = ["A", "B", "C", "D", "none", "identity"]


@st.composite
def specs(draw: st.DrawFn) -> str:
    """A small random spec for 32x32 input: stem, 1-3 stages of any block and shortcut, head."""
    stem_width = draw(st.sampled_from([4, 8, 16]))
    stem = f"conv1: conv 3x3, {stem_width}, stride {draw(st.sampled_from([1, 2]))}; bn1: batchnorm; relu"
    if draw(st.booleans()):
        stem += "; maxpool 3x3, stride 2"
    stages = []
    for i in range(draw(st.integers(1, 3))):
        options = [f"stride {draw(st.sampled_from([1, 2]))}", f"block: {draw(st.sampled_from(BLOCKS))}",
                   f"shortcut: {draw(st.sampled_from(SHORTCUTS))}"]
        if "bottleneck" in options[1] and "preact" not in options[1]:
            options += [f"groups: {draw(st.sampled_from([1, 2]))}", f"base_width: {draw(st.sampled_from([64, 128]))}"]
        depth, width = draw(st.integers(1, 2)), draw(st.sampled_from([4, 8, 12, 16]))
        stages.append(f"layer{i + 1}: {depth} x {width}, " + ", ".join(options))
    head = draw(st.sampled_from(["avgpool; fc: linear 10", "avgpool; flatten; fc1: linear 8; bn: batchnorm; relu; "
                                 "dropout 0.2; fc: linear 10"]))
    body = "\n    ".join(stages)
    return f"network random {{\n  input 3x32x32\n  stem {{ {stem} }}\n  stages {{\n    {body}\n  }}\n" \
           f"  head {{ {head} }}\n}}\n"


def _compile_or_reject(text: str, **params: object) -> resdsl.Network:
    try:
        return resdsl.compile(text, **params)
    except SpecError:
        assume(False)
        raise


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(specs())
def test_random_spec_module_matches_ir(text: str) -> None:
    network = _compile_or_reject(text)
    model = network.to_torch()
    assert _param_count(model) == network.params
    _assert_shapes_match_ir(network, model)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(specs(), st.integers(8, 48), st.integers(8, 48))
def test_module_runs_at_any_input_size_the_ir_accepts(text: str, height: int, width: int) -> None:
    network = _compile_or_reject(text)
    model = network.to_torch()
    try:
        moved = network.with_input((3, height, width))
    except SpecError:
        assume(False)
    _assert_shapes_match_ir(moved, model)


@pytest.mark.parametrize("spec", CIFAR_ZOO)
def test_cifar_zoo_module_matches_ir(spec: str) -> None:
    network = resdsl.compile(SPECS / f"{spec}.res")
    model = network.to_torch()
    assert _param_count(model) == network.params
    _assert_shapes_match_ir(network, model)


@pytest.mark.parametrize("spec", IMAGENET_ZOO)
def test_imagenet_zoo_module_matches_ir_at_64px(spec: str) -> None:
    network = resdsl.compile(SPECS / f"{spec}.res")
    model = network.to_torch()
    assert _param_count(model) == network.params
    _assert_shapes_match_ir(network.with_input((3, 64, 64)), model)


# --- shortcut options against hand computation --------------------------------------------


def test_cifar20_has_paper_parameter_count() -> None:
    assert _param_count(_model("cifar20")) == 269_722  # PAPER.md, Table 6


def test_option_a_shortcut_has_no_parameters() -> None:
    model = _model("cifar56")
    assert [n for n, _ in model.named_parameters() if "downsample" in n] == []
    assert _param_count(model) == 853_018  # PAPER.md, Table 6


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    model = _model("cifar20").eval()
    values = record_values(model, torch.randn(2, 3, 32, 32))
    block_input = values["layer1.2.relu_1"]
    expected = torch.cat([block_input[:, :, ::2, ::2], torch.zeros(2, 16, 16, 16)], dim=1)
    torch.testing.assert_close(values["layer2.0.downsample.pad_channels"], expected, rtol=0, atol=0)
    torch.testing.assert_close(values["layer2.0.add"], values["layer2.0.bn2"] + expected, rtol=0, atol=0)


def test_option_b_adds_three_projections_to_resnet34() -> None:
    projections = _projection(64, 128) + _projection(128, 256) + _projection(256, 512)
    assert _param_count(_model("resnet34b")) - _param_count(_model("resnet34")) == projections


def test_option_c_adds_a_projection_to_every_block_of_resnet34() -> None:
    blocks = ([(64, 64)] * 3 + [(64, 128)] + [(128, 128)] * 3 + [(128, 256)] + [(256, 256)] * 5
              + [(256, 512)] + [(512, 512)] * 2)
    extra = sum(_projection(cin, cout) for cin, cout in blocks)
    assert _param_count(_model("resnet34c")) - _param_count(_model("resnet34")) == extra


def test_option_d_costs_the_same_parameters_as_option_b() -> None:
    text = f'network resnet34d extends "{SPECS / "resnet34.res"}" {{\n  stages (shortcut: D)\n}}\n'
    model = resdsl.compile(text).to_torch()
    projections = _projection(64, 128) + _projection(128, 256) + _projection(256, 512)
    assert _param_count(model) - _param_count(_model("resnet34")) == projections
    assert isinstance(model.get_submodule("layer2.0.downsample.1"), nn.Conv2d)


def test_option_d_pools_only_where_the_stride_is_not_1() -> None:
    text = f'network resnet50d extends "{SPECS / "torchvision/resnet50.res"}" {{\n  stages (shortcut: D)\n}}\n'
    model = resdsl.compile(text).to_torch()
    assert [name for name, _ in model.layer1[0].downsample.named_children()] == ["1", "2"]  # stride 1: no pool
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)


def test_option_a_resnet34_is_torchvision_minus_its_projections() -> None:
    torchvision_resnet34 = 21_797_672
    projections = _projection(64, 128) + _projection(128, 256) + _projection(256, 512)
    assert _param_count(_model("resnet34")) == torchvision_resnet34 - projections


# --- op arguments against hand-written PyTorch ----------------------------------------------

PRIMITIVES = """network primitives {
  input 3x32x32
  stem {
    conv 5x5, 8, stride 2, padding 1, dilation 2, bias
    batchnorm eps: 1e-3, momentum: 0.01
    relu
    maxpool 3x3, stride 2, padding 1, ceil
    conv 3x3, 8, groups 2
    avgpool 2x2, stride 1, count_include_pad: false
  }
  head {
    flatten
    linear 16, bias: false
    batchnorm
    relu
    dropout 0.3
    dropout 0
    identity
    linear 10
  }
}
"""


def test_primitive_ops_mirror_their_arguments() -> None:
    reference = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=1, dilation=2, bias=True),
        nn.BatchNorm2d(8, eps=1e-3, momentum=0.01),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False),
        nn.AvgPool2d(2, stride=1, count_include_pad=False),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16, bias=False),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 10),
    )
    model = resdsl.compile(PRIMITIVES).to_torch()
    ours, theirs = list(model.state_dict().values()), reference.state_dict()
    assert [t.shape for t in ours] == [t.shape for t in theirs.values()]
    reference.load_state_dict(dict(zip(theirs, ours, strict=True)))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    reference.train()
    torch.manual_seed(0)
    train_out = model(x)
    torch.manual_seed(0)
    torch.testing.assert_close(train_out, reference(x))
    torch.testing.assert_close(list(model.state_dict().values()), list(reference.state_dict().values()))
    model.eval()
    reference.eval()
    torch.testing.assert_close(model(x), reference(x))


def test_dropout_zero_and_identity_add_no_module() -> None:
    model = resdsl.compile(PRIMITIVES).to_torch()
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 1


def test_op_without_lowering_is_a_clear_error() -> None:
    class Swish(ops.Op):
        name = "swish"
        doc = ops.OpDoc("an op no backend lowers")

    network = resdsl.compile(SPECS / "cifar20.res")
    network.graph.nodes["layer1.0.relu"].op = Swish()
    with pytest.raises(backends.Unsupported, match=r"layer1\.0\.relu: the op `swish` has no PyTorch lowering"):
        network.to_torch()


def test_residual_add_writes_into_the_branch_output_like_torchvision() -> None:
    block = _model("torchvision/resnet18").layer1[0]
    add = next(n for n in type(block).graph.nodes if n.name == "add")
    assert add.target is operator.iadd  # torchvision's `out += identity`
    assert add.args[0].name == "bn2"


def test_module_class_is_generated_once_per_network() -> None:
    network = resdsl.compile(SPECS / "cifar20.res")
    first, second = network.to_torch(), network.to_torch()
    assert type(first) is type(second) is network.torch_class
    assert first.conv1.weight is not second.conv1.weight


def test_module_pickles_as_graph_modules_with_the_same_outputs() -> None:
    model = _model("cifar20").eval()
    pickled = pickle.dumps(model)
    loaded = pickle.loads(pickled)
    x = torch.randn(2, 3, 32, 32)
    assert isinstance(loaded, fx.GraphModule)
    assert isinstance(loaded.layer2[0], fx.GraphModule)
    assert b"resdsl" not in pickled  # torch alone loads it
    assert torch.equal(loaded(x), model(x))


def test_deep_copy_keeps_the_generated_class() -> None:
    model = _model("cifar20")
    twin = copy.deepcopy(model)
    assert type(twin) is type(model)
    assert twin.conv1.weight is not model.conv1.weight
    torch.testing.assert_close(twin.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_containers_are_named_for_stage_block_and_shortcut() -> None:
    model = _model("torchvision/resnet18")
    names = [type(model.get_submodule(path)).__name__ for path in ("layer2", "layer2.0", "layer2.0.downsample")]
    assert names == ["Stage", "Basic", "ShortcutB"]


def test_generated_module_is_named_after_the_network() -> None:
    model = _model("torchvision/wide_resnet50_2")
    assert type(model).__name__ == "WideResnet50_2"
    assert "def forward(self, x)" in model.code


# --- initialisation ---------------------------------------------------------------------------


def test_convs_are_he_normal_fan_out() -> None:
    weight = _model("cifar20", seed=1).get_submodule("layer3.1.conv1").weight
    expected_std = math.sqrt(2 / (64 * 3 * 3))
    assert abs(weight.std().item() / expected_std - 1) < 0.03
    assert abs(weight.mean().item()) < 0.05 * expected_std


def test_batchnorms_start_at_one_and_zero() -> None:
    for module in _model("cifar20").modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))


def test_linear_has_pytorch_default_init() -> None:
    fc = _model("resnet18").get_submodule("fc")
    bound = 1 / math.sqrt(512)
    assert fc.weight.abs().max().item() <= bound
    assert abs(fc.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.03
    assert fc.bias.abs().max().item() <= bound


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_global_seed_gives_torchvision_initial_weights_bit_for_bit(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().state_dict()
    torch.manual_seed(0)
    model = _model(f"torchvision/{name}", seed=None).state_dict()
    assert list(model) == list(reference)
    torch.testing.assert_close(model, reference, rtol=0, atol=0)


def test_same_seed_gives_the_same_weights() -> None:
    first, second = _model("cifar20", seed=7).state_dict(), _model("cifar20", seed=7).state_dict()
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_different_seeds_give_different_weights() -> None:
    first, second = _model("cifar20", seed=1), _model("cifar20", seed=2)
    assert not torch.equal(first.get_submodule("conv1").weight, second.get_submodule("conv1").weight)


def test_seeded_build_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    _model("cifar20", seed=5)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)


def test_seed_none_draws_from_global_rng() -> None:
    torch.manual_seed(11)
    first = _model("cifar20", seed=None).get_submodule("conv1").weight
    torch.manual_seed(11)
    second = _model("cifar20", seed=None).get_submodule("conv1").weight
    assert torch.equal(first, second)
    assert not torch.equal(first, _model("cifar20", seed=0).get_submodule("conv1").weight)


def _zeroed_batchnorms(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()}


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_matches_torchvision(name: str) -> None:
    reference = getattr(torchvision.models, name)(zero_init_residual=True)
    model = _model(f"torchvision/{name}", zero_init_residual=True)
    assert _zeroed_batchnorms(model) == _zeroed_batchnorms(reference)
    assert _zeroed_batchnorms(model)


def test_zero_init_residual_off_zeroes_nothing() -> None:
    assert _zeroed_batchnorms(_model("cifar20")) == set()


def test_zero_init_residual_finds_last_batchnorm_by_graph_not_name() -> None:
    text = """block odd(width, stride = 1) {
  a: conv 3x3, width, stride stride
  norm_last: batchnorm
  relu
  add shortcut
  relu
}
network n {
  input 3x16x16
  stem { conv 3x3, 8; first_norm: batchnorm; relu }
  stages (block: odd, shortcut: B) { layer1: 2 x 8; layer2: 1 x 16, stride 2 }
  head { avgpool; linear 10 }
}
"""
    model = resdsl.compile(text).to_torch(zero_init_residual=True)
    assert _zeroed_batchnorms(model) == {"layer1.0.norm_last", "layer1.1.norm_last", "layer2.0.norm_last"}


def test_zero_init_residual_blocks_start_as_their_shortcut() -> None:
    model = _model("cifar20", zero_init_residual=True).eval()
    values = record_values(model, torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(values["layer1.1.add"], values["layer1.0.relu_1"], rtol=0, atol=0)


def test_zero_init_residual_leaves_preactivation_branches_alone() -> None:
    assert _zeroed_batchnorms(_model("preact/preact110", zero_init_residual=True)) == set()


# --- the PyTorch ecosystem ----------------------------------------------------------------------


def test_torch_compile_traces_the_module() -> None:
    model = _model("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_torch_compile_trains_like_eager() -> None:
    model = _model("cifar20")
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 32, 32)
    torch.compile(model, backend="aot_eager", fullgraph=True)(x).square().mean().backward()
    twin(x).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager() -> None:
    model = _model("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_torch_export_runs_like_the_module() -> None:
    model = _model("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), model(x))


def test_channels_last_gives_the_same_outputs() -> None:
    model = _model("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_the_lower_precision(dtype: torch.dtype) -> None:
    model = _model("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1 * expected.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step_gives_float32_gradients(dtype: torch.dtype) -> None:
    model = _model("torchvision/resnet18")  # in-place residual adds meet projection shortcuts
    with torch.autocast("cpu", dtype=dtype):  # 32x32: low-precision convs are slow on a CPU
        out = model(torch.randn(2, 3, 32, 32))
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)


def test_distributed_data_parallel_trains_like_the_module(tmp_path: Path) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = _model("cifar20")
        twin = copy.deepcopy(model)
        x = torch.randn(4, 3, 32, 32)
        nn.parallel.DistributedDataParallel(model)(x).square().mean().backward()
        twin(x).square().mean().backward()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
    finally:
        torch.distributed.destroy_process_group()
