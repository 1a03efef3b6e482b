"""Language v3 (issue 21): `none` layers, zero-init that finds nothing, stage rows, labels by string, loops,
booleans, block name patterns, `projects`, dropped stage options, and the hints for natural mistakes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import resdsl
from resdsl.backends.pytorch import ZeroInitWarning

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _net(stem: str = "", stages: str = "", head: str = "", before: str = "", shape: str = "3x8x8") -> str:
    sections = "".join(f"  {s}\n" for s in (stem, stages, head) if s)
    return f"{before}\nnetwork t {{\n  input {shape}\n{sections}}}\n"


def _error(text: str) -> str:
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(text)
    return str(caught.value)


# --- silent or surprising -----------------------------------------------------------------------


def test_arguments_given_to_a_none_layer_are_an_error():
    message = _error(_net(stem="stem { conv 3x3, 4; j = none; j nonexistent_tensor, 3, foo: 7 }"))
    assert "<string>:4:35: error: 'j' is none here, which adds no layer and takes no arguments" in message


def test_a_label_on_a_none_layer_names_the_tensor_it_passes_through():
    network = resdsl.compile(_net(stem="stem { c: conv 3x3, 4; j = none; kept: j; relu; add kept }"))
    assert [node for node in network.graph if node not in ("input", "output")] == ["c", "relu", "add"]
    assert set(network.graph.pred["add"]) == {"relu", "c"}


def test_zero_init_residual_warns_when_the_network_has_no_residual_branch():
    network = resdsl.compile(_net(stem="stem { conv 3x3, 4; batchnorm; relu }"))
    with pytest.warns(ZeroInitWarning, match="nothing was zeroed"):
        network.to_torch(zero_init_residual=True)


def test_zero_init_residual_is_an_error_when_its_warning_is():
    network = resdsl.compile(_net(stem="stem { conv 3x3, 4; batchnorm; relu }"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroInitWarning)
        with pytest.raises(ZeroInitWarning):
            network.to_torch(zero_init_residual=True)


def test_zero_init_residual_does_not_warn_when_it_zeroes_something():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroInitWarning)
        resdsl.compile("cifar20").to_torch(zero_init_residual=True)


def test_a_stage_named_head_has_its_own_row_apart_from_the_head():
    network = resdsl.compile(_net(stem="stem { conv 3x3, 4 }", stages="stages (block: basic, shortcut: A) "
                                  "{ head: 2 x 4 }", head="head { avgpool; fc: linear 2 }"))
    rows = [(s.name, s.blocks, s.params) for s in network.stages]
    # basic block at 4 channels: two 3x3 convs of 4*4*9 and two BNs of 8; the head's linear 4*2 + 2
    assert rows == [("stem", 0, 108), ("head", 2, 2 * (2 * 144 + 2 * 8)), ("head", 0, 10)]


def test_a_dotted_label_names_a_tensor_by_its_string():
    network = resdsl.compile(_net(stem='stem { a.b: conv 3x3, 4; g: sigmoid; from "a.b"; relu; add g; add "a.b" }'))
    assert set(network.graph.pred["relu"]) == {"a.b"}
    assert set(network.graph.pred["add_1"]) == {"add", "a.b"}


def test_a_string_naming_no_label_is_an_error_with_the_nearest():
    message = _error(_net(stem='stem { a.b: conv 3x3, 4; relu; add "a.c" }'))
    assert "no layer labelled 'a.c' comes before this in the body; did you mean 'a.b'?" in message


def test_identity_is_a_layer_that_passes_its_input():
    network = resdsl.compile(_net(stem="stem { conv 3x3, 4; keep: identity; relu }"))
    assert network.graph.nodes["keep"].shape == (4, 8, 8) and network.params == 108


# --- loops, booleans, conditions ----------------------------------------------------------------


def test_a_loop_repeats_its_body_with_labels_from_the_index():
    network = resdsl.compile(_net(stem="stem { for i in range(3) { convs.{i}: conv 3x3, 4 * (i + 1) } }"))
    assert [n for n in network.graph if n.startswith("convs")] == ["convs.0", "convs.1", "convs.2"]
    assert network.params == 3 * 4 * 9 + 4 * 8 * 9 + 8 * 12 * 9


def test_a_loop_over_range_with_a_start():
    network = resdsl.compile(_net(stem="stem { for i in range(2, 4) { c{i}: conv 1x1, i } }"))
    assert [n for n in network.graph if n.startswith("c")] == ["c2", "c3"]


def test_a_fixed_label_in_a_loop_is_used_twice_with_a_hint():
    message = _error(_net(stem="stem { conv 3x3, 4; for i in range(2) { x: relu } }"))
    assert "layer name 'x' is used twice (in a loop, give the label a part computed from the index" in message


def test_a_loop_needs_range():
    assert "a loop runs over `range(n)` or `range(start, stop)`" in _error(
        _net(stem="stem { for i in 3 { conv 3x3, 4 } }"))


@pytest.mark.parametrize(("condition", "channels"), [("true and not false", 16), ("false or 2 > 3", 8),
                                                      ("not (1 < 2 and 3 < 2)", 16), ("false and x", 8),
                                                      ("true or x", 16)])
def test_boolean_operators(condition: str, channels: int):
    network = resdsl.compile(_net(stem=f"stem {{ conv 3x3, 16 if {condition} else 8 }}"))
    assert network.output_shape == (channels, 8, 8)


def test_boolean_operators_take_only_true_or_false():
    assert "`and` takes true or false (a comparison), not 3" in _error(_net(stem="stem { conv 3x3, 3 and true }"))


def test_an_if_statement_chooses_its_layers():
    spec = "stem {{ if {0} {{ conv 3x3, 4 }} else if false {{ conv 3x3, 5 }} else {{ conv 3x3, 6 }} }}"
    assert resdsl.compile(_net(stem=spec.format("true"))).output_shape == (4, 8, 8)
    assert resdsl.compile(_net(stem=spec.format("false"))).output_shape == (6, 8, 8)


# --- stage block names, projects, dropped options --------------------------------------------------


PATTERNED = _net(stem="stem { conv 3x3, 8; bn: batchnorm; relu }",
                 stages='stages (block: basic, shortcut: B) { s1: 2 x 8, blocks "b{i + 1}"; '
                        's2: 1 x 16, stride 2, blocks "b{i + 1}" }', head="head { avgpool; fc: linear 2 }")


def test_a_stage_names_its_blocks_by_a_pattern():
    network = resdsl.compile(PATTERNED)
    assert {n.rpartition(".")[0] for n in network.graph if n.endswith(".conv1")} == {"s1.b1", "s1.b2", "s2.b1"}
    assert [(s.name, s.blocks) for s in network.stages[1:3]] == [("s1", 2), ("s2", 1)]


def test_patterned_blocks_keep_zero_init_and_feature_taps():
    network = resdsl.compile(PATTERNED)
    model = network.to_torch(zero_init_residual=True)
    assert not model.s1.b2.bn2.weight.any() and not model.s2.b1.bn2.weight.any()
    features = network.to_torch(features=["s1", "s2"])(torch.randn(1, 3, 8, 8))
    assert features["s1"].shape == (1, 8, 8, 8) and features["s2"].shape == (1, 16, 4, 4)


def test_patterned_blocks_are_modules_of_their_block_class():
    model = resdsl.compile(PATTERNED).to_torch()
    assert type(model.s1).__name__ == "Stage" and type(model.s1.b2).__name__ == "Basic"


def test_a_block_pattern_that_repeats_a_name_is_an_error():
    message = _error(_net(stem="stem { conv 3x3, 8 }",
                          stages='stages (block: basic, shortcut: B) { s1: 2 x 8, blocks "b{i // 2}" }'))
    assert "blocks pattern 'b{i // 2}' gives the name 'b0' twice" in message


MARKED = """
block marked(width, stride = 1) {
  conv: conv 3x3, width, stride stride
  if projects { projected: relu }
  add shortcut
}
"""


@pytest.mark.parametrize(("shortcut", "marked"), [("B", ["l2.0"]), ("C", ["l1.0", "l1.1", "l2.0"]),
                                                  ("A", ["l2.0"]), ("none", [])])
def test_projects_tells_a_block_whether_its_shortcut_has_layers(shortcut: str, marked: list[str]):
    # l1 keeps the stem's 8 channels (the `same` case), l2 strides to 16 (the `changed` case)
    spec = _net(before=MARKED, stem="stem { conv 3x3, 8 }",
                stages=f"stages (block: marked, shortcut: {shortcut}) {{ l1: 2 x 8; l2: 1 x 16, stride 2 }}")
    network = resdsl.compile(spec)
    assert sorted(n.removesuffix(".projected") for n in network.graph if n.endswith(".projected")) == marked


def test_a_child_drops_an_inherited_stage_option():
    spec = 'network r extends "torchvision/resnet50" { stages (block: basic, -groups, -base_width) }'
    reference = torchvision.models.resnet34()  # basic blocks at ResNet-50's depths
    assert resdsl.compile(spec).params == sum(p.numel() for p in reference.parameters())


def test_dropping_an_option_the_parent_does_not_give_is_an_error():
    message = _error('network r extends "torchvision/resnet50" { stages (-attn) }')
    assert "`-attn`: the parent gives no stage option 'attn' (it gives block, shortcut, groups, base_width)" in message


def test_an_inherited_option_the_childs_block_does_not_take_is_reported_at_the_childs_line():
    message = _error('network r extends "torchvision/resnet50" {\n  stages (block: basic)\n}')
    assert message.startswith("<string>:2:11: error: neither block 'basic' nor shortcut option 'B' has a "
                              "parameter 'groups'")
    assert "drop it with `-groups`" in message and "resnet50.res" in message


# --- hints -------------------------------------------------------------------------------------------


def test_a_keyword_used_as_a_name_is_called_a_keyword():
    assert "'for' is a keyword, so it cannot be used as a name here" in _error(_net(stem="stem { for = 3 }"))


def test_an_op_with_parentheses_as_a_layer_gets_a_hint():
    message = _error(_net(stem="stem { bn1: groupnorm(8) }"))
    assert "a layer's arguments follow its name without parentheses: `groupnorm …`, not `groupnorm(…)`" in message


def test_an_op_with_arguments_as_a_value_gets_a_hint():
    message = _error(_net(stages="stages (block: basic, shortcut: B, norm: groupnorm 8) { 1 x 8 }"))
    assert "a value with arguments is written as a call: `groupnorm(8)`, not `groupnorm 8`" in message


def test_an_unknown_attention_lists_the_known_ones():
    message = _error(_net(stem="stem { conv 3x3, 8 }", stages="stages (block: basic, shortcut: B, attn: sse) "
                                                              "{ 1 x 8 }"))
    assert "unknown attention 'sse' (known: eca, se, or none)" in message


def test_an_unknown_zoo_name_suggests_the_nearest():
    with pytest.raises(resdsl.SpecError, match="no such file: resnet5; did you mean the zoo's 'resnet50'"):
        resdsl.compile("resnet5")


# --- the prelude ---------------------------------------------------------------------------------


def test_deep_stem_takes_the_middle_width_of_resnet_t():
    import timm

    reference = timm.create_model("resnet50t").conv1.eval()  # timm's tiered stem: 24, 32, 64 channels
    spec = _net(stem="stem { conv1: deep_stem 24, 64, mid: 32 }", shape="3x32x32")
    model = resdsl.compile(spec).to_torch().eval()
    model.load_state_dict({f"conv1.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


@pytest.mark.parametrize(("split", "groups"), [(False, 1), (True, 2)])
def test_selective_kernel_takes_groups_and_split(split: bool, groups: int):
    from timm.layers import SelectiveKernel

    reference = SelectiveKernel(16, 16, split_input=split, groups=groups, rd_ratio=0.25, rd_divisor=8).eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean = torch.randn(module.running_mean.shape) * 0.1
    spec = _net(stem=f"stem {{ sk: selective_kernel 16, rd_ratio: 0.25, groups: {groups}, "
                     f"split: {'true' if split else 'false'} }}", shape="16x8x8")
    model = resdsl.compile(spec).to_torch().eval()
    model.load_state_dict({f"sk.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


@pytest.mark.parametrize("radix", [1, 2, 4])
def test_split_attention_is_timms_split_attn_at_any_radix(radix: int):
    from timm.layers import SplitAttn

    reference = SplitAttn(16, 16, radix=radix, norm_layer=nn.BatchNorm2d).eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean = torch.randn(module.running_mean.shape) * 0.1
            module.weight.data = torch.rand(module.weight.shape) + 0.5
    spec = _net(stem=f"stem {{ conv2: split_attention 16, radix: {radix} }}", shape="16x8x8")
    model = resdsl.compile(spec).to_torch().eval()
    model.load_state_dict({f"conv2.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_se_takes_rd_channels():
    network = resdsl.compile(_net(stem="stem { conv 3x3, 16; se: se 16, rd_channels: 5 }"))
    assert network.graph.nodes["se.fc1"].shape == (5, 1, 1)


@pytest.mark.parametrize("depths", [(2, 2, 2, 2), (1, 2, 3, 1)])
def test_torchvision_resnet18_takes_depths(depths: tuple[int, ...]):
    from torchvision.models.resnet import BasicBlock, ResNet

    params = dict(zip(("depth1", "depth2", "depth3", "depth4"), depths, strict=True))
    reference = ResNet(BasicBlock, list(depths))
    assert resdsl.compile("torchvision/resnet18", **params).params == sum(p.numel() for p in reference.parameters())
