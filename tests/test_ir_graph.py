"""The graph IR as the library hands it out: typed nodes, one graph type, networkx only as an export."""

from __future__ import annotations

from pathlib import Path

from conftest import modules_a_command_imports, modules_imported_by

import resdsl
from resdsl.ir.graph import IRGraph, Meta, Node

SPECS = Path(__file__).resolve().parent.parent / "specs"

# torchvision's resnet18 by hand: conv1, bn1, relu, maxpool; 8 basic blocks of conv1, bn1, relu, conv2, bn2, the
# add and the relu after it (torchvision calls one ReLU module twice; the IR has a node per call); a conv and a
# BatchNorm in the downsample of layer2.0, layer3.0 and layer4.0; avgpool, flatten, fc; the input and the output.
RESNET18_NODES = 4 + 8 * 7 + 3 * 2 + 3 + 2
RESNET18_ADDS = 8


def test_network_graph_is_the_ir_graph_with_typed_nodes():
    network = resdsl.compile(SPECS / "torchvision" / "resnet18.res")
    assert type(network.graph) is IRGraph
    node = network.graph.nodes["layer1.0.conv1"]
    assert type(node) is Node and type(node.meta) is Meta
    assert node.args is not None
    assert (node.op.name, node.args["out"], node.shape, node.meta.params) == ("conv", 64, (64, 56, 56), 64 * 64 * 9)


def test_graph_facts_are_fields():
    graph = resdsl.compile(SPECS / "torchvision" / "resnet18.res").graph
    assert (graph.name, graph.input_shape, graph.output) == ("resnet18", (3, 224, 224), "fc")
    assert graph.stages == ["layer1", "layer2", "layer3", "layer4"]


def test_a_node_has_no_attribute_dict():
    node = resdsl.compile(SPECS / "torchvision" / "resnet18.res").graph.nodes["fc"]
    assert not hasattr(node, "__dict__")  # slotted: a misspelt field is an error, not a new attribute


def test_to_networkx_has_the_same_nodes_in_order_and_the_same_edges_with_their_index():
    network = resdsl.compile(SPECS / "torchvision" / "resnet18.res")
    exported = network.to_networkx()
    assert exported.number_of_nodes() == len(network.graph) == RESNET18_NODES
    assert exported.number_of_edges() == RESNET18_NODES - 1 + RESNET18_ADDS  # one input each, two for an add
    assert list(exported.nodes) == list(network.graph)
    assert {(s, t, d["index"]) for s, t, d in exported.edges(data=True)} == set(network.graph.edges())
    assert exported.nodes["layer2.0.add"]["residual"] is True
    assert [s for s, _ in sorted(exported.pred["layer2.0.add"].items(), key=lambda p: p[1]["index"])] == [
        "layer2.0.bn2", "layer2.0.downsample.1"]  # the branch first, then the shortcut


def test_to_networkx_carries_the_node_fields_and_the_graph_facts():
    network = resdsl.compile(SPECS / "torchvision" / "resnet18.res")
    exported = network.to_networkx()
    conv = exported.nodes["conv1"]
    assert (conv["op"].name, conv["shape"], conv["params"], conv["macs"]) == ("conv", (64, 112, 112), 9408,
                                                                              9408 * 112 * 112)
    assert exported.graph["input_shape"] == (3, 224, 224) and exported.graph["output"] == "fc"


def test_checking_drawing_and_summarising_import_no_networkx_torch_or_numpy():
    code = ("import resdsl\n"
            "from resdsl.cli.info import summary, table\n"
            "from resdsl.diff import diff\n"
            "from resdsl.lsp.analysis import analyse, hover\n"
            "from resdsl.network import lower_unchecked\n"
            "from resdsl.viz import draw\n"
            "network = resdsl.compile('resnet152')\n"
            "summary(network), table(network), diff(network, resdsl.compile('resnet50'))\n"
            "graph, _ = lower_unchecked('resnet152')\n"
            "[draw(graph, level) for level in ('stage', 'block', 'op')]\n"
            f"path = {str(SPECS / 'resnet18.res')!r}\n"
            "assert 'blocks' in hover(analyse(path, open(path).read()), 5, 5)  # the stage line `layer1: 2 x 64`")
    assert modules_imported_by(code, ("networkx", "torch", "numpy"))[1] == []


def test_the_check_info_and_viz_commands_import_no_networkx(tmp_path: Path):
    for command in (["check", "resnet152"], ["info", "resnet152"], ["viz", "resnet152", "-o", str(tmp_path / "r.dot")]):
        assert modules_a_command_imports(command, ("networkx",))[1] == [], command
