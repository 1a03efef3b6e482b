"""The language and its IR: params, extends, blocks, expressions, shortcut options, node ids, scopes, spans."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_resdsl
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app
from resdsl.ir.graph import inputs

SPECS = Path(__file__).resolve().parent.parent / "specs"

# A tiny net whose counts are easy by hand: 3x8x8 input, a 4-channel stem, one basic block that keeps
# 4 channels and one that goes to 8 with stride 2, then a 2-way classifier.
TINY = """
network tiny {{
  input 3x8x8
  stem {{ conv 3x3, 4; batchnorm; relu }}
  stages (block: basic, shortcut: {shortcut}) {{
    1 x 4
    1 x 8, stride 2
  }}
  head {{ avgpool; fc: linear 2 }}
}}
"""
# stem conv 3*4*9 + bn 8; layer1: 2 convs 4*4*9 + 2 bns of 8; layer2: convs 4*8*9 and 8*8*9, bns 16 each;
# fc 8*2 + 2.
TINY_PARAMS = 108 + 8 + (144 + 8 + 144 + 8) + (288 + 16 + 576 + 16) + 18
PROJECTION_4_TO_8 = 4 * 8 + 2 * 8  # 1x1 conv + BN
PROJECTION_4_TO_4 = 4 * 4 + 2 * 4


def _tiny(shortcut: str) -> resdsl.Network:
    return resdsl.compile(TINY.format(shortcut=shortcut))


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


# --- params ------------------------------------------------------------------------------------


def test_compile_keyword_sets_a_param():
    # Table 6: n = 9 is ResNet-56.
    assert resdsl.compile(SPECS / "cifar_resnet.res", n=9).params == 853_018


def test_cli_set_sets_a_param():
    result = CliRunner().invoke(app, ["info", str(SPECS / "cifar_resnet.res"), "--set", "n=5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"] == 464_154  # Table 6, ResNet-32


def test_set_of_one_param_twice_is_a_usage_error_as_in_extends(tmp_path: Path) -> None:
    """`extends "x" (n = 3, n = 4)` is refused; `--set n=3 --set n=4` should not silently take the last."""
    result = run_resdsl("check", "cifar20", "--set", "n=3", "--set", "n=4", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --set n ") and "twice" in result.stderr


def test_set_supplies_a_param_declared_without_value():
    text = "param c\nnetwork t {\n  input 3x8x8\n  stem { conv 1x1, c }\n}\n"
    assert resdsl.compile(text, c=5).params == 3 * 5


def test_param_defaults_may_use_earlier_params():
    text = "param a = 4\nparam b = a * 2\nnetwork t {\n  input 3x8x8\n  stem { conv 1x1, b }\n}\n"
    assert resdsl.compile(text).params == 3 * 8
    assert resdsl.compile(text, a=1).params == 3 * 2


# --- extends -----------------------------------------------------------------------------------


def test_extends_with_param_override(tmp_path):
    child = _write(tmp_path, "child.res", f'network child extends "{SPECS / "cifar_resnet.res"}" (n = 18) {{\n}}\n')
    assert resdsl.compile(child).params == 1_727_962  # Table 6, ResNet-110


def test_extends_arguments_may_read_the_childs_own_params(tmp_path):
    child = _write(tmp_path, "child.res", f'param depth = 110\nnetwork child extends "{SPECS / "cifar_resnet.res"}" '
                                          "(n = (depth - 2) // 6) {\n}\n")
    assert resdsl.compile(child).params == 1_727_962  # Table 6, ResNet-110
    assert resdsl.compile(child, depth=20).params == 269_722  # ResNet-20


def test_params_that_read_each_other_in_a_circle_are_an_error():
    text = "param a = b + 1\nparam b = a\nnetwork t {\n  input 3x8x8\n  stem { conv 1x1, a }\n}\n"
    with pytest.raises(resdsl.SpecError, match=r"param 'a' depends on itself \(through b\)"):
        resdsl.compile(text)


def test_a_cycle_of_extends_names_every_file_in_it(tmp_path):
    _write(tmp_path, "a.res", 'network a extends "b.res" {\n}\n')
    _write(tmp_path, "b.res", 'network b extends "a.res" {\n}\n')
    with pytest.raises(resdsl.SpecError, match=r"a cycle of extends: .*a\.res -> .*b\.res -> .*a\.res"):
        resdsl.compile(str(tmp_path / "a.res"))


def test_extends_merges_stage_options_key_by_key(tmp_path):
    _write(tmp_path, "parent.res", TINY.format(shortcut="A"))
    child = _write(tmp_path, "child.res", 'network child extends "parent.res" {\n  stages (shortcut: C)\n}\n')
    network = resdsl.compile(child)
    # the block stays basic (from the parent), the shortcut becomes C, the stage lines stay
    assert network.params == TINY_PARAMS + PROJECTION_4_TO_4 + PROJECTION_4_TO_8
    assert "layer1.0.conv2" in network.graph


def test_extends_stage_lines_replace_the_parents(tmp_path):
    _write(tmp_path, "parent.res", TINY.format(shortcut="A"))
    child = _write(tmp_path, "child.res", 'network child extends "parent.res" {\n  stages { 1 x 4 }\n}\n')
    network = resdsl.compile(child)
    assert network.graph.stages == ["layer1"]
    assert network.params == 108 + 8 + (144 + 8 + 144 + 8) + (4 * 2 + 2)


def test_extends_section_replaces_the_parents(tmp_path):
    _write(tmp_path, "parent.res", TINY.format(shortcut="A"))
    child = _write(tmp_path, "child.res", 'network child extends "parent.res" {\n  head { avgpool; linear 5 }\n}\n')
    network = resdsl.compile(child)
    assert network.output_shape == (5,)
    assert "fc" not in network.graph


def test_extends_path_is_relative_to_the_child(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "parent.res", TINY.format(shortcut="A"))
    child = _write(tmp_path / "sub", "child.res", 'network child extends "parent.res" { }\n')
    monkeypatch.chdir(tmp_path)
    assert resdsl.compile(child).params == TINY_PARAMS


# --- blocks and expressions --------------------------------------------------------------------


def test_user_block_with_integer_arithmetic():
    text = """
block squeeze(width, stride = 1, ratio = 4) {
  mid = width // ratio + 1       # 64 // 4 + 1 = 17
  reduce: conv 1x1, mid
  expand: conv 1x1, width * 2 - mid, stride stride
}
network t {
  input 64x8x8
  stages (block: squeeze, shortcut: none) { 1 x 64 }
}
"""
    network = resdsl.compile(text)
    assert network.params == 64 * 17 + 17 * (128 - 17)
    assert network.output_shape == (111, 8, 8)


def test_block_alias_binds_arguments():
    text = """
block scaled(width, stride = 1, k = 1) { conv 3x3, width * k, stride stride }
block doubled = scaled(k: 2)
network t {
  input 4x8x8
  stages (block: doubled, shortcut: none) { 1 x 4 }
}
"""
    assert resdsl.compile(text).params == 4 * 8 * 9


def test_alias_binding_the_shortcut_makes_a_plain_block():
    network = resdsl.compile(TINY.format(shortcut="none").replace("block: basic", "block: plain_basic"))
    assert not any(node.op.name == "add" for node in network.graph.nodes.values())
    assert network.params == TINY_PARAMS


def test_stage_option_passes_a_block_argument():
    text = TINY.format(shortcut="B").replace("block: basic", "block: bottleneck, expansion: 1")
    # bottleneck with expansion 1: 1x1, 3x3, 1x1 all at the stage width
    layer1 = (4 * 4 + 8) + (4 * 4 * 9 + 8) + (4 * 4 + 8)
    layer2 = (4 * 8 + 16) + (8 * 8 * 9 + 16) + (8 * 8 + 16) + PROJECTION_4_TO_8
    assert resdsl.compile(text).params == 116 + layer1 + layer2 + 18


def test_comments_and_semicolons_are_equivalent_to_lines():
    one_line = "network t { input 3x8x8; stem { conv 3x3, 4; relu }; head { avgpool; linear 2 } }"
    lines = """
# a comment line
network t {   # a trailing comment
  input 3x8x8
  stem {
    conv 3x3, 4
    relu
  }
  head {
    avgpool
    linear 2
  }
}
"""
    a, b = resdsl.compile(one_line), resdsl.compile(lines)
    assert list(a.graph.nodes) == list(b.graph.nodes)
    assert a.params == b.params == 108 + 10


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "lone_cr"])
def test_crlf_and_lone_cr_line_endings_parse_as_lines(newline, tmp_path):
    text = TINY.format(shortcut="B")
    path = tmp_path / "spec.res"
    path.write_bytes(text.replace("\n", newline).encode())
    network = resdsl.compile(path)
    assert list(network.graph.nodes) == list(resdsl.compile(text).graph.nodes)
    assert network.graph.nodes["fc"].span.line == 9


def test_error_in_a_lone_cr_file_is_at_its_line(tmp_path):
    path = tmp_path / "spec.res"
    path.write_bytes(b"network t {\r  input 3x8x8\r  stem {\r    conv 3x3, 4\r    batchnrom\r  }\r}\r")
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(path)
    assert f"{path}:5:5: error: unknown op or block 'batchnrom'" in caught.value.render()


def test_label_may_start_with_numbered_parts():
    network = resdsl.compile("network t {\n  input 3x8x8\n  stem {\n    0.1: conv 3x3, 4\n    2: relu\n"
                             "    dropout 0.5\n  }\n}\n")
    assert list(network.graph.nodes) == ["input", "0.1", "2", "dropout", "output"]
    assert network.graph.nodes["dropout"].args["p"] == 0.5


@pytest.mark.parametrize(("n", "width"), [(3, 32), (1, 16)])
def test_conditional_expression(n, width):
    text = "param n = 3\nnetwork t {\n  input 3x8x8\n  stem { conv 1x1, 32 if n > 2 else 16 }\n}\n"
    assert resdsl.compile(text, n=n).output_shape == (width, 8, 8)


def test_stages_options_may_touch_the_keyword():
    text = TINY.format(shortcut="A").replace("stages (", "stages(")
    assert resdsl.compile(text).params == TINY_PARAMS


def test_conv_padding_defaults_to_half_the_kernel():
    network = resdsl.compile(SPECS / "resnet50.res")
    assert network.graph.nodes["conv1"].args["padding"] == (3, 3)
    assert network.graph.nodes["conv1"].shape == (64, 112, 112)


def test_linear_after_a_pooled_map_inserts_flatten():
    graph = _tiny("A").graph
    assert graph.nodes["flatten"].op.name == "flatten"
    assert inputs(graph, "fc") == ["flatten"]


# --- shortcut options --------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "params"), [
    ("none", TINY_PARAMS),
    ("A", TINY_PARAMS),
    ("B", TINY_PARAMS + PROJECTION_4_TO_8),
    ("C", TINY_PARAMS + PROJECTION_4_TO_4 + PROJECTION_4_TO_8),
    ("D", TINY_PARAMS + PROJECTION_4_TO_8),
])
def test_shortcut_option_params(option, params):
    assert _tiny(option).params == params


def test_option_a_subsamples_and_pads_only_where_shape_changes():
    graph = _tiny("A").graph
    assert inputs(graph, "layer1.0.add")[1] == "relu"  # identity: the block's input
    assert graph.nodes["layer2.0.downsample.subsample"].shape == (4, 4, 4)
    assert graph.nodes["layer2.0.downsample.pad_channels"].shape == (8, 4, 4)


def test_option_b_projects_only_where_shape_changes():
    graph = _tiny("B").graph
    assert not any(node.startswith("layer1.0.downsample") for node in graph)
    assert graph.nodes["layer2.0.downsample.0"].args["stride"] == (2, 2)


def test_option_d_pools_before_a_stride_1_projection():
    graph = _tiny("D").graph
    ops = [graph.nodes[f"layer2.0.downsample.{i}"].op.name for i in range(3)]
    assert ops == ["avgpool", "conv", "batchnorm"]
    assert graph.nodes["layer2.0.downsample.1"].args["stride"] == (1, 1)


def test_plain_option_has_no_add():
    assert not any(node.op.name == "add" for node in _tiny("none").graph.nodes.values())


def test_user_defined_shortcut_option():
    text = """
shortcut gated {
  same { identity }
  changed { 0: conv 1x1, out_channels, stride stride, bias true }
}
""" + TINY.format(shortcut="gated")
    network = resdsl.compile(text)
    assert network.params == TINY_PARAMS + 4 * 8 + 8
    assert "layer1.0.add" in network.graph


def test_shortcut_option_missing_a_case_is_an_error_naming_it():
    gated = "shortcut gated {\n  changed { 0: conv 1x1, out_channels, stride stride }\n}\n"
    text = gated + TINY.format(shortcut="gated")
    with pytest.raises(resdsl.SpecError, match="shortcut option 'gated' has no `same` case") as error:
        resdsl.compile(text)
    assert str(error.value).startswith("<string>:1:1: error:")


# --- IR: node ids, scopes, spans, edges -----------------------------------------------------------


def test_node_ids_are_torchvision_module_paths():
    graph = resdsl.compile(SPECS / "torchvision" / "resnet50.res").graph
    for node in ("conv1", "bn1", "maxpool", "layer1.0.conv1", "layer2.0.conv2", "layer2.0.bn3",
                 "layer2.0.downsample.0", "layer2.0.downsample.1", "layer4.2.conv3", "avgpool", "fc"):
        assert node in graph, node
    assert "layer2.1.downsample.0" not in graph


def test_unnamed_layers_take_the_op_name_with_a_count():
    graph = resdsl.compile(SPECS / "resnet18.res").graph
    assert graph.nodes["layer1.0.relu"].op.name == "relu"
    assert graph.nodes["layer1.0.relu_1"].op.name == "relu"
    assert "layer1.0.relu_2" not in graph


def test_scope_of_a_shortcut_node():
    scope = resdsl.compile(SPECS / "resnet50.res").graph.nodes["layer3.0.downsample.0"].scope
    assert (scope.section, scope.stage, scope.block, scope.branch) == ("stage", "layer3", 0, "shortcut")
    assert (scope.block_type, scope.shortcut) == ("bottleneck", "B")


def test_scope_of_stem_and_head_nodes():
    graph = resdsl.compile(SPECS / "resnet50.res").graph
    assert graph.nodes["conv1"].scope.section == "stem"
    assert graph.nodes["fc"].scope.section == "head"
    assert graph.nodes["layer4.2.conv3"].scope.block == 2


def test_node_span_points_into_the_spec():
    path = SPECS / "resnet34.res"
    graph = resdsl.compile(path).graph
    span = graph.nodes["conv1"].span
    line = path.read_text().splitlines()[span.line - 1]
    assert line[span.column - 1:].startswith("conv1: conv 7x7, 64")


def test_block_node_span_is_in_the_prelude_and_origin_is_the_stage_line():
    path = SPECS / "resnet34.res"
    node = resdsl.compile(path).graph.nodes["layer3.0.conv1"]
    assert node.span.path.endswith("prelude.res")
    assert node.origin is not None
    assert path.read_text().splitlines()[node.origin.line - 1].strip().startswith("layer3: 6 x 256")


def test_add_inputs_are_ordered_residual_then_shortcut():
    graph = resdsl.compile(SPECS / "torchvision" / "resnet18.res").graph
    assert inputs(graph, "layer1.0.add") == ["layer1.0.bn2", "maxpool"]
    assert inputs(graph, "layer2.0.add") == ["layer2.0.bn2", "layer2.0.downsample.1"]
    assert inputs(graph, "layer2.1.add") == ["layer2.1.bn2", "layer2.0.relu_1"]


def test_add_nodes_have_two_inputs_and_others_one():
    graph = resdsl.compile(SPECS / "resnet18.res").graph
    degrees = {graph.nodes[n].op.name: len(graph.pred[n]) for n in graph if n != "input"}
    assert degrees.pop("add") == 2
    assert set(degrees.values()) == {1}


def test_graph_is_a_dag_from_input_to_output():
    import networkx as nx

    graph = resdsl.compile(SPECS / "resnet50.res").to_networkx()
    assert nx.is_directed_acyclic_graph(graph)
    assert [n for n in graph if graph.in_degree(n) == 0] == ["input"]
    assert graph.out_degree("output") == 0


# --- Network API -------------------------------------------------------------------------------


def test_with_input_rechecks_for_another_shape():
    network = resdsl.compile(SPECS / "cifar20.res").with_input((1, 28, 28))
    assert network.input_shape == (1, 28, 28)
    assert network.output_shape == (10,)
    assert {s.name: tuple(s.output) for s in network.stages}["layer3"] == (64, 7, 7)
    assert network.params == 269_722 - 2 * 16 * 9  # the stem conv sees 1 channel instead of 3


def test_with_input_too_small_is_a_spec_error():
    with pytest.raises(resdsl.SpecError, match="spatial size reaches zero"):
        resdsl.compile(SPECS / "vgg19.res").with_input((3, 16, 16))  # five 2x2 pools


def test_compile_accepts_spec_text():
    assert _tiny("A").name == "tiny"


def test_stage_summaries_count_blocks():
    stages = {s.name: s.blocks for s in resdsl.compile(SPECS / "resnet152.res").stages}
    assert [stages[f"layer{i}"] for i in range(1, 5)] == [3, 8, 36, 3]  # Table 1


# --- imports -----------------------------------------------------------------------------------


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_import_resdsl_does_not_import_torch():
    assert "torch" not in _modules_after(f"import resdsl; resdsl.compile({str(SPECS / 'resnet50.res')!r})")


@pytest.mark.parametrize("command", [["check", str(SPECS / "resnet50.res")], ["info", "resnet50", "--json"]])
def test_check_and_info_do_not_import_torch(command):
    code = ("from typer.testing import CliRunner\nfrom resdsl.cli.app import app\n"
            f"result = CliRunner().invoke(app, {command!r})\nassert result.exit_code == 0, result.output")
    assert "torch" not in _modules_after(code)


def test_a_block_value_bound_by_keyword_takes_positional_arguments_later_as_partial_does():
    text = 'network t extends "torchvision/resnet50" {\n  stages (attn: se(rd_ratio: 0.25))\n}\n'
    graph = resdsl.compile(text).graph
    assert graph.nodes["layer1.0.se.fc1"].args["out"] == 64  # channels 256 (positional, at the call) x 0.25
    assert graph.nodes["layer4.0.se.fc1"].args["out"] == 512


def test_a_utf8_byte_order_mark_is_read_as_nothing(tmp_path):
    path = tmp_path / "bom.res"
    path.write_bytes(b"\xef\xbb\xbf" + b"network n {\n  input 3x8x8\n  stem { conv 3x3, 4 }\n}\n")
    assert resdsl.compile(str(path)).params == 3 * 9 * 4


ALIAS_WITH_SHORTCUT = """
block myb = basic(shortcut: B(norm: groupnorm(4)))
network n {{
  input 3x32x32
  stem {{ conv 3x3, 16 }}
  stages (block: myb, shortcut: {shortcut}) {{ layer1: 1 x 16; layer2: 1 x 32, stride 2 }}
}}
"""


def test_a_stage_may_repeat_the_shortcut_its_block_alias_binds():
    assert resdsl.compile(ALIAS_WITH_SHORTCUT.format(shortcut="B(norm: groupnorm(4))")).params == \
        resdsl.compile(ALIAS_WITH_SHORTCUT.replace(", shortcut: {shortcut}", "").format()).params


def test_a_shortcut_conflicting_with_the_block_aliases_is_shown_as_written():
    with pytest.raises(resdsl.SpecError, match=re.escape("shortcut B(norm: groupnorm(8)) conflicts with block 'myb', "
                                                         "which binds shortcut B(norm: groupnorm(4))")):
        resdsl.compile(ALIAS_WITH_SHORTCUT.format(shortcut="B(norm: groupnorm(8))"))
