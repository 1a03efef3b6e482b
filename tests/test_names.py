"""One rule for names: a label or stage name is refused at `check` with its reason and place, or it becomes a
module path that PyTorch holds and the generated code calls — never a crash in between.
"""

from __future__ import annotations

import keyword
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import resdsl
from resdsl.ir.names import MODULE_MEMBERS
from resdsl.ir.ops import OPS

pytestmark = pytest.mark.torch

PREACT_CIFAR = Path(__file__).resolve().parent.parent / "specs" / "preact" / "preact_cifar.res"


def _public(module: nn.Module) -> set[str]:
    """The public attributes of a container that a child's name could hide (its children excluded)."""
    return {name for name in dir(module) if not name.startswith("_")} - set(module._modules)


def _containers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if module._modules]


def test_module_members_cover_nn_module_graph_module_and_the_containers():
    graph_module = fx.GraphModule(nn.Module(), fx.Graph())
    instance = {name for name in vars(graph_module) if not name.startswith("_")}  # set in __init__: meta, shape_env
    assert (_public(nn.Module()) | _public(graph_module) | instance | _public(nn.Sequential())
            | _public(nn.ModuleList())) <= MODULE_MEMBERS


@pytest.mark.parametrize("features", [None, ["layer1", "layer2.0.conv1"]], ids=["network", "feature_extractor"])
def test_module_members_cover_the_classes_resdsl_generates(features):
    gate = ("block gate(channels) {\n  avgpool\n  fc: conv 1x1, channels, bias\n  sigmoid\n  mul input\n}\n"
            "network t {\n  input 3x16x16\n  stem { conv1.0: conv 3x3, 8; conv1.1: relu }\n"
            "  stages (block: basic, shortcut: B, attn: gate) { 1 x 8; 1 x 16, stride 2 }\n"
            "  head { avgpool; head.fc: linear 10 }\n}\n")
    members: set[str] = set()
    for spec in (resdsl.compile(gate), resdsl.compile(PREACT_CIFAR, n=1)):
        model = spec.to_torch(seed=0, features=features)
        for module in _containers(model):
            members |= _public(module)
    assert members <= MODULE_MEMBERS


# --- every edge case of a name, in every place a name is written ----------------------------------------

ACCEPTED = [
    "0", "7", "10", "x", "x_1", "torch", "nn", "F", "math", "getattr", "super", "object", "print", "len", "id",
    "match", "case", "getitem", "placeholder", "call_module", "call_function", "graph_module", "conv1_2",
    "a_b", "Sequential", "Module", "l" * 200, *(name for name, op in OPS.items() if not op.internal),
]
REFUSED = sorted(set(keyword.kwlist) | MODULE_MEMBERS | {"_", "_x", "__init__", "__class__", "_modules", "output"})


def _everywhere(names: list[str]) -> str:
    """Each name labelling a layer in the stem, in a block run by a stage, and in the head (dotted)."""
    layers = "".join(f"  {name}: relu\n" for name in names)
    return (f"block unit(width, stride = 1) {{\n  conv1: conv 3x3, width, stride stride\n{layers}  add shortcut\n}}\n"
            f"network t {{\n  input 3x16x16\n  stem {{\n  c0: conv 3x3, 8\n{layers}}}\n"
            "  stages (block: unit, shortcut: B) {\n    1 x 8\n    1 x 16, stride 2\n  }\n"
            "  head {\n" + "".join(f"  head.{name}: relu\n" for name in names) + "  avgpool\n  fc: linear 10\n}\n}\n")


def _as_stages(names: list[str]) -> str:
    stages = "".join(f"    {name}: 1 x 8\n" for name in names)
    return (f"network t {{\n  input 3x16x16\n  stem {{ conv 3x3, 8 }}\n"
            f"  stages (block: basic, shortcut: B) {{\n{stages}  }}\n  head {{ avgpool; fc: linear 10 }}\n}}\n")


def test_accepted_labels_build_and_run_everywhere():
    model = resdsl.compile(_everywhere(ACCEPTED)).to_torch(seed=0)
    paths = set(dict(model.named_modules()))
    for name in ACCEPTED:
        assert {name, f"layer1.0.{name}", f"layer2.0.{name}", f"head.{name}"} <= paths, name
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 10)
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), model(x))
    assert torch.equal(fx.symbolic_trace(model)(x), model(x))


def test_accepted_stage_names_build_and_run():
    model = resdsl.compile(_as_stages(ACCEPTED)).to_torch(seed=0)
    assert [name for name, _ in model.named_children()][1:-3] == ACCEPTED  # after the stem's conv, before the head
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("spec", [_everywhere(["self"]), _as_stages(["self"])], ids=["label", "stage"])
def test_self_builds_and_runs(spec):
    assert resdsl.compile(spec).to_torch(seed=0)(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", REFUSED)
def test_refused_label_is_a_spec_error_at_the_label(name):
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(_everywhere([name]))
    first = caught.value.diagnostics[0]
    assert first.span is not None and first.span.line in (3, 10)  # the block's label, or the stem's
    if name.isidentifier() and name not in ("from", "if", "else"):  # the grammar's own words are syntax errors
        assert f"'{name}'" in first.message


@pytest.mark.parametrize("name", REFUSED)
def test_refused_stage_name_is_a_spec_error_at_the_stage(name):
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(_as_stages([name]))
    first = caught.value.diagnostics[0]
    assert first.span is not None and first.span.line == 5


def test_refusal_says_why():
    reasons = {
        "class": "is a Python keyword",
        "_x": "starts with '_'",
        "forward": "would hide nn.Module's member",
        "output": "names the network's output",
    }
    for name, reason in reasons.items():
        with pytest.raises(resdsl.SpecError, match=re.escape(reason)):
            resdsl.compile(_everywhere([name]))


def test_labels_that_read_alike_in_generated_code_stay_apart():
    # `a_b` and `a.b` are both `a_b` as a Python name in the generated forward
    network = resdsl.compile("network t {\n  input 3x8x8\n  stem {\n    a_b: conv 3x3, 4\n    a.b: conv 3x3, 5\n"
                             "    a_b_1: conv 3x3, 6\n    conv 3x3, 7\n    conv 3x3, 8\n  }\n}\n")
    model = network.to_torch(seed=0)
    assert {"a_b", "a.b", "a_b_1", "conv", "conv_1"} <= set(dict(model.named_modules()))
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)


def test_stage_name_is_kept_from_the_unlabelled_layers_before_it():
    network = resdsl.compile("network t {\n  input 3x8x8\n  stem { conv 3x3, 4; relu }\n"
                             "  stages (block: basic, shortcut: B) { conv: 1 x 4; relu: 1 x 4 }\n}\n")
    assert [node for node in network.graph if "." not in node] == ["input", "conv_1", "relu_1", "output"]
    assert network.stages[0].name == "stem" and [s.name for s in network.stages[1:]] == ["conv", "relu"]
