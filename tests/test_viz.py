"""`resdsl viz`: real SVG from Graphviz, parsed as XML and checked against the paper's figures and tables."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdsl.cli.app import app
from resdsl.network import lower_unchecked
from resdsl.viz import draw, render

SPECS = Path(__file__).resolve().parent.parent / "specs"
SVG = "{http://www.w3.org/2000/svg}"

# Option A at a stage that narrows 32 -> 16 channels: zero-padding cannot shrink channels.
SHRINKING = """network shrink {
  input 3x32x32
  stem { conv1: conv 3x3, 32; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 2 x 32
    layer2: 2 x 16, stride 2
    layer3: 2 x 64, stride 2
  }
  head { avgpool; fc: linear 10 }
}
"""

# 30 channels cannot be split into 4 groups.
BAD_GROUPS = """network groups {
  input 3x32x32
  stem { conv1: conv 3x3, 30 }
  head { mix: conv 3x3, 64, groups 4; avgpool; fc: linear 10 }
}
"""


def svg(spec: str | Path, level: str, expand: bool = False, **params) -> ET.Element:
    graph, _ = lower_unchecked(spec, **params)
    return ET.fromstring(render(draw(graph, level, expand), "svg"))


def groups(root: ET.Element, kind: str) -> dict[str, ET.Element]:
    """The SVG groups of Graphviz nodes, edges or clusters, by their <title>."""
    return {g.find(f"{SVG}title").text: g for g in root.iter(f"{SVG}g")
            if kind in g.get("class", "").split()}


def text(group: ET.Element) -> str:
    return " ".join((t.text or "").strip() for t in group.iter(f"{SVG}text"))


def classes(group: ET.Element) -> set[str]:
    return set(group.get("class", "").split())


def outline(group: ET.Element) -> ET.Element:
    """The first shape Graphviz drew for a node or edge (tooltips nest it in an <a>)."""
    return next(e for e in group.iter() if e.tag in (f"{SVG}polygon", f"{SVG}path", f"{SVG}ellipse"))


def dashed(edge: ET.Element) -> bool:
    return outline(edge).get("stroke-dasharray") is not None


def stroke(node: ET.Element) -> str:
    return outline(node).get("stroke")


def labels(root: ET.Element) -> list[str]:
    return [text(node) for node in groups(root, "node").values()]


def box(group: ET.Element) -> tuple[float, float, float, float]:
    """The bounding box (x0, y0, x1, y1) of what Graphviz drew for a node or cluster."""
    shape = outline(group)
    if shape.tag == f"{SVG}ellipse":
        x, y, rx, ry = (float(shape.get(k)) for k in ("cx", "cy", "rx", "ry"))
        return x - rx, y - ry, x + rx, y + ry
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", shape.get("d") or shape.get("points"))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def inside(node: ET.Element, frame: ET.Element) -> bool:
    x0, y0, x1, y1 = box(node)
    f0, g0, f1, g1 = box(frame)
    return f0 <= x0 and g0 <= y0 and x1 <= f1 and y1 <= g1


def sources(root: ET.Element, node: str) -> list[str]:
    """The drawn nodes with an edge into `node`."""
    return sorted(title.split("->")[0] for title in groups(root, "edge") if title.split("->")[1] == node)


def targets(root: ET.Element, node: str) -> list[str]:
    return sorted(title.split("->")[1] for title in groups(root, "edge") if title.split("->")[0] == node)


@cache
def block_svg(name: str) -> ET.Element:
    return svg(SPECS / f"{name}.res", "block")


def run(*args: str | Path):
    return CliRunner().invoke(app, ["viz", *map(str, args)])


# --- block level: the paper's Figure 3 ------------------------------------------------------------

def test_block_view_labels_layers_as_figure_3_does():
    found = labels(svg(SPECS / "resnet34.res", "block"))
    for label in ("7×7 conv, 64, /2", "3×3 max pool, /2", "3×3 conv, 64", "3×3 conv, 128, /2",
                  "3×3 conv, 256, /2", "3×3 conv, 512, /2", "3×3 conv, 512", "avg pool", "fc 1000"):
        assert label in found


def test_block_view_collapses_identical_blocks_to_times_n():
    # Table 1, ResNet-34: 3, 4, 6, 3 blocks; the first block of layers 2-4 differs (stride 2).
    root = svg(SPECS / "resnet34.res", "block")
    assert sorted(text(c) for c in groups(root, "cluster").values()) == ["×2", "×3", "×3", "×5"]
    assert labels(root).count("3×3 conv, 128") == 3  # layer2.0's second conv and the ×3 block's two
    assert labels(root).count("3×3 conv, 128, /2") == 1


def test_expand_draws_every_layer_of_the_34_layer_net():
    root = svg(SPECS / "resnet34.res", "block", expand=True)
    convs = [label for label in labels(root) if "conv" in label]
    assert len(convs) == 33  # 34 weighted layers = 33 convs + fc
    assert labels(root).count("+") == 16
    assert not groups(root, "cluster")


def test_identity_shortcuts_are_solid_and_option_a_dashed():
    edges = groups(svg(SPECS / "resnet34.res", "block", expand=True), "edge")
    shortcuts = [e for e in edges.values() if "shortcut" in classes(e)]
    assert sum(dashed(e) for e in shortcuts) == 3  # conv3_1, conv4_1, conv5_1 increase dimensions
    assert sum(not dashed(e) for e in shortcuts) == 13


def test_option_a_dashed_shortcut_ends_at_the_stride_2_block():
    edges = groups(svg(SPECS / "resnet34.res", "block"), "edge")
    dashed_ends = sorted(title.split("->")[1] for title, e in edges.items() if dashed(e))
    assert dashed_ends == ["layer2.0.add", "layer3.0.add", "layer4.0.add"]


def test_projection_shortcuts_are_labelled_boxes():
    # ResNet-50 with option B: a 1x1 projection where the width changes (all four stages' first blocks).
    root = svg(SPECS / "resnet50.res", "block")
    boxes = [n for n in groups(root, "node").values() if "projection" in classes(n)]
    assert sorted(text(b) for b in boxes) == ["1×1 conv, 1024, /2", "1×1 conv, 2048, /2", "1×1 conv, 256",
                                              "1×1 conv, 512, /2"]
    assert all(outline(b).tag == f"{SVG}polygon" for b in boxes)  # a box, not the rounded layer shape
    assert not any(dashed(e) for e in groups(root, "edge").values())


def test_option_c_projects_every_shortcut():
    root = svg(SPECS / "resnet34c.res", "block", expand=True)
    boxes = [n for n in groups(root, "node").values() if "projection" in classes(n)]
    assert len(boxes) == 16


def test_plain_net_has_no_shortcuts():
    root = svg(SPECS / "plain34.res", "block", expand=True)
    assert "+" not in labels(root)
    assert not [e for e in groups(root, "edge").values() if "shortcut" in classes(e)]
    assert len([label for label in labels(root) if "conv" in label]) == 33


def test_block_view_collapses_the_1202_layer_net_to_one_block_per_run():
    # ResNet-1202 (Table 6): n = 200 blocks per stage; layer2 and layer3 start with a stride-2 block.
    root = svg(SPECS / "cifar1202.res", "block")
    assert sorted(text(c) for c in groups(root, "cluster").values()) == ["×199", "×199", "×200"]


def test_block_view_puts_shapes_on_the_edges_where_they_change():
    edges = groups(svg(SPECS / "cifar20.res", "block"), "edge")
    assert sorted(text(e) for e in edges.values() if text(e)) == ["16×32×32", "32×16×16", "64×8×8"]


def test_a_block_output_read_by_the_next_block_is_not_drawn():
    # Figure 3 draws no ReLU: the last ReLU of a block in a "×N" run is read twice, but by the next block.
    for name in ("resnet34", "timm/seresnet50"):
        assert not [label for label in labels(block_svg(name)) if "ReLU" in label]


# --- block level: the constructs of language v2 --------------------------------------------------------

def test_se_gate_is_framed_pool_convs_sigmoid_product():
    # Hu et al. 2018: global pool, FC to C/r, ReLU, FC to C, sigmoid, scale; timm's r = 16 on 256 channels.
    root = block_svg("timm/seresnet50")
    nodes = groups(root, "node")
    frame = groups(root, "cluster")["cluster_layer1.0.se"]
    assert text(frame) == "se"
    gate = ["layer1.0.se.avgpool", "layer1.0.se.fc1", "layer1.0.se.fc2", "layer1.0.se.sigmoid", "layer1.0.se.mul"]
    assert [text(nodes[n]) for n in gate] == ["avg pool", "1×1 conv, 16", "1×1 conv, 256", "sigmoid", "×"]
    assert all(inside(nodes[n], frame) for n in gate)
    for before, after in itertools.pairwise(gate):
        assert after in targets(root, before)


def test_se_product_takes_the_gate_and_the_blocks_tensor_from_outside_its_frame():
    root = block_svg("timm/seresnet50")
    nodes = groups(root, "node")
    frame = groups(root, "cluster")["cluster_layer1.0.se"]
    assert sources(root, "layer1.0.se.mul") == ["layer1.0.bn3", "layer1.0.se.sigmoid"]
    assert text(nodes["layer1.0.bn3"]) == "BN" and not inside(nodes["layer1.0.bn3"], frame)
    assert sources(root, "layer1.0.se.avgpool") == ["layer1.0.bn3"]
    assert sources(root, "layer1.0.add") == ["layer1.0.downsample.1", "layer1.0.se.mul"]


def test_preact_projection_starts_at_the_units_own_bn_relu():
    # resnet-pre-act.lua: the unit that increases dimensions shares its BN-ReLU with the 1x1 projection.
    root = block_svg("preact/preact164")
    nodes = groups(root, "node")
    for stage, previous, width in (("layer2", "layer1", 128), ("layer3", "layer2", 256)):
        pre, projection = f"{stage}.0.pre", f"{stage}.0.downsample.0"
        assert text(nodes[pre]) == "BN, ReLU"
        assert sources(root, projection) == [pre]
        assert text(nodes[projection]) == f"1×1 conv, {width}, /2"
        assert sources(root, pre) == [f"{previous}.1.add"]  # the ×17 run ending the stage before
        assert sorted(targets(root, pre)) == sorted([f"{stage}.0.conv1", projection])


def test_preact_identity_shortcut_is_the_clean_path_from_the_previous_sum():
    root = block_svg("preact/preact164")
    assert sources(root, "layer2.1.add") == ["layer2.0.add", "layer2.1.conv3"]
    assert "layer2.1.pre" not in groups(root, "node")  # read once: BN-ReLU stays implied


def test_sk_paths_start_at_two_channel_slices_of_the_block_input():
    # timm's SelectiveKernel with split input: 64 channels halved, a 3x3 and a dilated 3x3 path of width 64.
    root = block_svg("timm/skresnet18")
    nodes = groups(root, "node")
    frame = groups(root, "cluster")["cluster_layer1.0.conv1"]
    assert text(frame) == "selective_kernel"
    slices = [n for n in nodes if n.startswith("layer1.0.conv1.slice_channels")][:2]
    assert [text(nodes[n]) for n in slices] == ["channels 0:32", "channels 32:64"]
    assert sources(root, slices[0]) == sources(root, slices[1]) == ["maxpool"]
    paths = [targets(root, n) for n in slices]
    assert [text(nodes[p[0]]) for p in paths] == ["3×3 conv, 64", "3×3 conv, 64, dilation 2×2"]
    assert all(inside(nodes[n], frame) for n in slices)


def test_sk_attention_weights_each_path_and_sums_them():
    root = block_svg("timm/skresnet18")
    nodes = groups(root, "node")
    softmax = next(n for n in nodes if n.startswith("layer1.0.conv1.weights"))
    weights = targets(root, softmax)
    assert sorted(text(nodes[n]) for n in weights) == ["channels 0:64", "channels 64:128"]
    products = [targets(root, n)[0] for n in weights]
    assert len(set(products)) == 2 and all(text(nodes[n]) == "×" for n in products)
    path_ends = {n for p in products for n in sources(root, p)} - set(weights)
    assert path_ends == {"layer1.0.conv1.path0", "layer1.0.conv1.path1"}
    assert all(text(nodes[n]) == "BN, ReLU" for n in path_ends)
    total = {targets(root, p)[0] for p in products}
    assert len(total) == 1 and text(nodes[total.pop()]) == "+"


def test_a_call_inside_a_call_is_framed_inside_its_frame():
    spec = ("block wrapped(channels) {\n  inner: se channels\n}\nnetwork w {\n  input 3x32x32\n"
            "  stem { conv1: conv 3x3, 32 }\n  stages (block: basic, shortcut: A, attn: wrapped) { layer1: 1 x 32 }\n"
            "  head { avgpool; fc: linear 10 }\n}\n")
    root = svg(spec, "block")
    frames = groups(root, "cluster")
    outer, inner = frames["cluster_layer1.0.se"], frames["cluster_layer1.0.se.inner"]
    assert (text(outer), text(inner)) == ("wrapped", "se")
    assert inside(inner, outer)
    assert inside(groups(root, "node")["layer1.0.se.inner.fc1"], inner)


# --- stage level: Table 1 as a chain ---------------------------------------------------------------

def test_stage_view_is_table_1_as_a_chain():
    root = svg(SPECS / "resnet50.res", "stage")
    nodes = groups(root, "node")
    assert list(nodes) == ["input", "stem", "layer1", "layer2", "layer3", "layer4", "head", "output"]
    assert "[1×1, 64; 3×3, 64; 1×1, 256] ×3" in text(nodes["layer1"])
    assert "[1×1, 128; 3×3, 128; 1×1, 512] ×4, /2" in text(nodes["layer2"])
    assert "[1×1, 512; 3×3, 512; 1×1, 2048] ×3, /2" in text(nodes["layer4"])
    assert "bottleneck, shortcut B" in text(nodes["layer3"])
    assert "7×7 conv, 64, /2" in text(nodes["stem"])


def test_stage_view_names_a_called_block_after_the_convs_as_the_se_paper_does():
    # Hu et al. 2018, Table 1: SE-ResNet-50's conv2_x is the bottleneck's three convs, then the SE's fc.
    nodes = groups(svg(SPECS / "timm/seresnet50.res", "stage"), "node")
    assert "[1×1, 64; 3×3, 64; 1×1, 256; se] ×3" in text(nodes["layer1"])


def test_stage_view_edges_carry_table_1_output_sizes():
    edges = groups(svg(SPECS / "resnet50.res", "stage"), "edge")
    assert {title: text(e) for title, e in edges.items()} == {
        "input->stem": "3×224×224", "stem->layer1": "64×56×56", "layer1->layer2": "256×56×56",
        "layer2->layer3": "512×28×28", "layer3->layer4": "1024×14×14", "layer4->head": "2048×7×7",
        "head->output": "1000"}


def test_stage_view_follows_set_params():
    nodes = groups(svg(SPECS / "cifar_resnet.res", "stage", n=5), "node")
    assert "[3×3, 32; 3×3, 32] ×5, /2" in text(nodes["layer2"])


# --- op level: every IR node ---------------------------------------------------------------------------

def test_op_view_draws_every_op_with_args_and_shape():
    nodes = groups(svg(SPECS / "cifar20.res", "op"), "node")
    assert text(nodes["layer2.0.conv1"]) == "layer2.0.conv1 conv 3x3, 32, stride 2 32×16×16"
    assert text(nodes["layer2.0.downsample.pad_channels"]).endswith("pad_channels 32 32×16×16")
    assert len([n for n in nodes if n.endswith(("conv1", "conv2"))]) == 19  # 6n convs with n = 3, and the stem's
    assert "fc" in nodes and "input" in nodes


def test_op_view_clusters_by_stage_and_block():
    clusters = groups(svg(SPECS / "cifar20.res", "op"), "cluster")
    assert {"cluster_stem", "cluster_layer1", "cluster_layer3", "cluster_head"} <= set(clusters)
    assert text(clusters["cluster_layer2.1"]) == "layer2.1 (basic)"
    assert len([name for name in clusters if name.count(".") == 1]) == 9  # 3 stages x n = 3 blocks


# --- a spec that fails its checks is still drawn ---------------------------------------------------------

@pytest.mark.parametrize("level", ["stage", "block", "op"])
def test_failing_node_is_red_with_its_diagnostic(level):
    nodes = groups(svg(SHRINKING, level), "node")
    red = [n for n in nodes.values() if stroke(n) == "red"]
    assert len(red) == 1
    assert "zero-padding cannot shrink 32 channels to 16" in " ".join(text(red[0]).split())


def test_nodes_downstream_of_a_failure_are_grey():
    nodes = groups(svg(SHRINKING, "op"), "node")
    assert stroke(nodes["fc"]) != "black"
    assert text(nodes["fc"]).endswith("?")
    assert stroke(nodes["layer1.0.conv1"]) == "black"


def test_groups_that_do_not_divide_mark_the_conv():
    nodes = groups(svg(BAD_GROUPS, "op"), "node")
    assert stroke(nodes["mix"]) == "red"
    assert "groups 4 does not divide the 30 input channels" in " ".join(text(nodes["mix"]).split())


def test_an_op_that_cannot_be_built_is_red_where_it_is_written():
    spec = "network z {\n  input 3x32x32\n  stem { conv 3x3, 8; bogus 3 }\n  head { avgpool; fc: linear 10 }\n}\n"
    nodes = groups(svg(spec, "block"), "node")
    red = [text(n) for n in nodes.values() if stroke(n) == "red"]
    assert red == ["not built see the diagnostics"]
    assert stroke(nodes["fc"]) != "black"


@pytest.mark.parametrize(("layer", "op"), [("conv 3x3", "conv"), ("identity 3", "identity")])
def test_a_layer_with_bad_arguments_is_drawn_as_its_op_in_red(layer, op):
    """Not as "not built", which is for what could not be made at all (an unknown op, block or stage)."""
    spec = (f"network z {{\n  input 3x32x32\n  stem {{ conv 3x3, 8; keep: {layer} }}\n"
            "  head { avgpool; fc: linear 10 }\n}\n")
    nodes = groups(svg(spec, "block"), "node")
    assert [text(n) for n in nodes.values() if stroke(n) == "red"] == [f"{op} see the diagnostics"]


@pytest.mark.parametrize("level", ["stage", "block", "op"])
def test_a_stage_of_an_unknown_block_is_drawn_red(level):
    spec = ("network u {\n  input 3x32x32\n  stem { conv 3x3, 16 }\n  stages (block: bottlenek, shortcut: B) {\n"
            "    layer1: 2 x 16\n  }\n  head { avgpool; fc: linear 10 }\n}\n")
    nodes = groups(svg(spec, level), "node")
    red = [text(n) for n in nodes.values() if stroke(n) == "red"]
    assert len(red) == 1 and "see the diagnostics" in red[0]


# --- the command ------------------------------------------------------------------------------------------

def test_cli_writes_svg(tmp_path):
    out = tmp_path / "r.svg"
    result = run(SPECS / "resnet18.res", "-o", out)
    assert result.exit_code == 0
    assert ET.parse(out).getroot().tag == f"{SVG}svg"


def test_cli_writes_png_and_pdf(tmp_path):
    run(SPECS / "cifar20.res", "-o", tmp_path / "a.png", "--level", "stage")
    run(SPECS / "cifar20.res", "-o", tmp_path / "a.pdf", "--level", "stage")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")


def test_cli_draws_a_failing_spec_and_exits_1(tmp_path):
    spec = tmp_path / "shrink.res"
    spec.write_text(SHRINKING)
    out = tmp_path / "shrink.svg"
    result = run(spec, "-o", out)
    assert result.exit_code == 1
    assert f"{spec}:6:5: error:" in result.stderr
    assert out.exists()


def test_cli_spec_that_does_not_parse_writes_nothing(tmp_path):
    spec = tmp_path / "bad.res"
    spec.write_text("network bad {\n  input 3x32x32\n  stem { conv 3x3, }\n}\n")
    result = run(spec, "-o", tmp_path / "bad.svg")
    assert result.exit_code == 1
    assert f"{spec}:3:" in result.stderr
    assert not list(tmp_path.glob("*.svg*")) and not list(tmp_path.glob(".bad.svg*"))


def test_cli_unknown_extension_is_a_usage_error(tmp_path):
    result = run(SPECS / "resnet18.res", "-o", tmp_path / "r.jpeg")
    assert result.exit_code == 2
    assert "error: " in result.stderr and ".svg, .png, .pdf or .dot" in result.stderr
    assert not list(tmp_path.iterdir())


def test_cli_unknown_level_is_a_usage_error(tmp_path):
    assert run(SPECS / "resnet18.res", "-o", tmp_path / "r.svg", "--level", "layer").exit_code == 2


def test_cli_bad_set_is_a_usage_error(tmp_path):
    assert run(SPECS / "cifar_resnet.res", "-o", tmp_path / "r.svg", "--set", "n").exit_code == 2


def test_dot_output_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "r.dot"
    result = run(SPECS / "resnet34.res", "-o", out)
    assert result.exit_code == 0
    source = out.read_text()
    assert source.startswith("// resdsl viz --level block") and "digraph resnet34_block {" in source


def test_rendering_without_graphviz_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = run(SPECS / "resnet34.res", "-o", tmp_path / "r.svg")
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.stderr and "brew install graphviz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.svg*")) and not list(tmp_path.glob(".r.svg*"))


def test_cli_output_that_cannot_be_written_is_one_sentence(tmp_path):
    (tmp_path / "taken.svg").mkdir()
    result = run(SPECS / "resnet18.res", "-o", tmp_path / "taken.svg")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: -o ") and "is a directory" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_viz_benchmark_prints_each_case_with_its_node_count(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    script = SPECS.parent / "benchmarks" / "viz.py"
    loaded = importlib.util.spec_from_file_location("viz_benchmark", script)
    assert loaded is not None and loaded.loader is not None
    benchmark = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(benchmark)
    monkeypatch.setattr(benchmark, "CASES", [("cifar20", "stage", False, "svg")])
    benchmark.main()
    row = capsys.readouterr().out.splitlines()[-1].split()
    # cifar20 by hand: input, stem 3, 9 basic blocks x 7, option A's subsample + pad_channels in layer2.0 and
    # layer3.0 (4), head avgpool + flatten + fc, output
    assert row[:4] == ["cifar20", "stage", "svg", str(1 + 3 + 9 * 7 + 4 + 3 + 1)]
