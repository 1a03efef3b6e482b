"""Every op is lowered, drawn and exported; each new op's rule against a hand computation or PyTorch written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tree_values import record_values

import resdsl
from resdsl.backends.pytorch import LOWERINGS
from resdsl.ir.ops import OPS

pytestmark = pytest.mark.torch

# Every op a spec can write, once at least (test_the_all_ops_spec_uses_every_op keeps it so).
ALL_OPS = """network all_ops {
  input 3x16x16
  stem {
    conv1: conv 3x3, 8, bias
    bn: batchnorm
    gn: groupnorm 2
    relu
    a: silu
    gelu
    hard_swish
    maxpool 3x3, stride 1, padding 1
    avgpool 3x3, stride 1, count_include_pad false
    concat a
    slice_channels 4, 12
    subsample 2
    c: pad_channels 12
    identity
    add c
    avgpool
    channel_conv 3
    sigmoid
    hard_sigmoid
    g: softmax branches 3
    from c
    mul g
    softmax
    maxpool
    flatten
    dropout 0.1
    fc: linear 10
  }
}
"""


def _network() -> resdsl.Network:
    return resdsl.compile(ALL_OPS)


def test_the_all_ops_spec_uses_every_op() -> None:
    graph = _network().graph
    assert {graph.nodes[n].op.name for n in graph} == set(OPS)


@pytest.mark.parametrize("name", sorted(n for n, op in OPS.items() if not op.internal))
def test_op_has_a_pytorch_lowering(name: str) -> None:
    assert type(OPS[name]) in LOWERINGS


def test_every_node_has_a_diagram_label_and_spec_text() -> None:
    graph = _network().graph
    for node in graph:
        op, args = graph.nodes[node].op, graph.nodes[node].args
        assert op.label(args) and op.text(args).startswith(op.name), node


def test_module_of_every_op_has_the_ir_counts_and_shapes() -> None:
    network = _network()
    model = network.to_torch(seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == network.params
    values = record_values(model, torch.randn(2, 3, 16, 16))
    for node in network.graph:
        if node in values:
            assert tuple(values[node].shape[1:]) == network.graph.nodes[node].shape, node


def test_every_op_exports_to_onnx_with_the_same_outputs(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _network().to_torch(seed=0).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "all_ops.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_mul_broadcasts_a_gate_over_the_map() -> None:
    text = "network t {\n input 4x5x5\n stem { x: relu; avgpool; g: sigmoid; from x; mul g }\n}\n"
    network = resdsl.compile(text)
    assert network.output_shape == (4, 5, 5)
    x = torch.randn(2, 4, 5, 5)
    expected = x.relu() * x.relu().mean((2, 3), keepdim=True).sigmoid()
    torch.testing.assert_close(network.to_torch()(x), expected)


def test_softmax_across_branches_is_per_channel_over_the_groups() -> None:
    network = resdsl.compile("network t {\n input 6x1x1\n stem { softmax branches 2 }\n}\n")
    x = torch.randn(3, 6, 1, 1)
    expected = torch.softmax(x.view(3, 2, 3, 1, 1), dim=1).view(3, 6, 1, 1)  # timm's SelectiveKernelAttn
    torch.testing.assert_close(network.to_torch()(x), expected)


def test_channel_conv_is_ecas_conv1d_across_channels() -> None:
    model = resdsl.compile("network t {\n input 8x1x1\n stem { conv: channel_conv 3 }\n}\n").to_torch()
    x = torch.randn(2, 8, 1, 1)
    expected = F.conv1d(x.view(2, 1, 8), model.conv.weight, padding=1).view(2, 8, 1, 1)  # timm's EcaModule
    torch.testing.assert_close(model(x), expected)
    assert model.conv.weight.shape == (1, 1, 3)


def test_channel_conv_counts_one_weight_and_one_mac_per_tap_and_channel() -> None:
    network = resdsl.compile("network t {\n input 8x1x1\n stem { channel_conv 5 }\n}\n")
    assert (network.params, network.macs) == (5, 8 * 5)


def test_slice_concat_and_add_move_channels_as_python_would() -> None:
    text = "network t {\n input 6x2x2\n stem { a: slice_channels 0, 2; from input; slice_channels 2, 6; concat a }\n}\n"
    x = torch.randn(1, 6, 2, 2)
    torch.testing.assert_close(resdsl.compile(text).to_torch()(x), torch.cat([x[:, 2:6], x[:, 0:2]], 1))


def test_groupnorm_counts_two_params_per_channel_and_matches_pytorch() -> None:
    network = resdsl.compile("network t {\n input 8x4x4\n stem { gn: groupnorm 4, eps 1e-3 }\n}\n")
    model = network.to_torch()
    assert network.params == 16
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(model(x), F.group_norm(x, 4, model.gn.weight, model.gn.bias, eps=1e-3))


def test_global_max_pool_keeps_a_1x1_map() -> None:
    network = resdsl.compile("network t {\n input 3x7x5\n stem { maxpool }\n}\n")
    x = torch.randn(2, 3, 7, 5)
    assert network.output_shape == (3, 1, 1)
    torch.testing.assert_close(network.to_torch()(x), x.amax((2, 3), keepdim=True))


def test_op_reading_one_tensor_twice_is_a_spec_error() -> None:
    with pytest.raises(resdsl.SpecError, match="add reads the same tensor twice") as error:
        resdsl.compile("network t {\n input 4x5x5\n stem { x: relu; add x }\n}\n")
    assert str(error.value).startswith("<string>:3:18: error:")
