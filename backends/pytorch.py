"""Lower the graph IR to a PyTorch module: submodules at the node ids, forward generated with torch.fx.

Each op maps to a module (ops with parameters or train/eval state) or to a call in the generated
forward (parameter-free ops); adding an op is one `@lowering` function here. The fx node of IR
node `layer2.0.conv1` is named `layer2_0_conv1`; pass-through ops (identity, dropout 0) have none.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn

from resdsl.ir.graph import inputs
from resdsl.ir.ops import Args, Shape

from . import Unsupported

if TYPE_CHECKING:
    from resdsl.network import Network

# Ops whose result is a new tensor that no other op aliases, so a sole consumer may overwrite it.
_FRESH = frozenset({"conv", "batchnorm", "linear", "add", "maxpool", "avgpool", "pad_channels"})
# Parameter-free ops that keep zeros zero: a BatchNorm followed only by these ends its branch.
_ZERO_PRESERVING = frozenset({"relu", "dropout", "identity"})


@dataclass(frozen=True)
class OpView:
    """What a lowering sees of one IR node: its arguments and the shapes around it."""

    args: Args
    inputs: list[Shape]
    shape: Shape
    owns_input: bool = False  # the input is a fresh tensor read by this op alone


@dataclass(frozen=True)
class Call:
    """A parameter-free op in the generated forward: `function(*inputs, *args, **kwargs)`."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


Lowered = nn.Module | Call | None  # None: the op passes its input through unchanged
LOWERINGS: dict[str, Callable[[OpView], Lowered]] = {}


def lowering(op: str) -> Callable[[Callable[[OpView], Lowered]], Callable[[OpView], Lowered]]:
    """Register the PyTorch lowering of an IR op."""

    def register(function: Callable[[OpView], Lowered]) -> Callable[[OpView], Lowered]:
        LOWERINGS[op] = function
        return function

    return register


@lowering("conv")
def _conv(node: OpView) -> nn.Module:
    a = node.args
    return nn.Conv2d(node.inputs[0][0], a["out"], a["kernel"], stride=a["stride"], padding=a["padding"],
                     dilation=a["dilation"], groups=a["groups"], bias=a["bias"])


@lowering("batchnorm")
def _batchnorm(node: OpView) -> nn.Module:
    norm = nn.BatchNorm2d if len(node.shape) == 3 else nn.BatchNorm1d
    return norm(node.shape[0], eps=node.args["eps"], momentum=node.args["momentum"])


@lowering("linear")
def _linear(node: OpView) -> nn.Module:
    return nn.Linear(node.inputs[0][0], node.args["out"], bias=node.args["bias"])


@lowering("dropout")
def _dropout(node: OpView) -> Lowered:
    return nn.Dropout(node.args["p"]) if node.args["p"] > 0 else None


@lowering("identity")
def _identity(node: OpView) -> Lowered:
    return None


@lowering("relu")
def _relu(node: OpView) -> Call:
    return Call(F.relu, kwargs={"inplace": True} if node.owns_input else {})


@lowering("add")
def _add(node: OpView) -> Call:
    return Call(operator.add)


@lowering("flatten")
def _flatten(node: OpView) -> Call:
    return Call(torch.flatten, (1,))


@lowering("maxpool")
def _maxpool(node: OpView) -> Call:
    a = node.args
    return Call(F.max_pool2d, kwargs={"kernel_size": a["kernel"], "stride": a["stride"], "padding": a["padding"],
                                      "ceil_mode": a["ceil"]})


@lowering("avgpool")
def _avgpool(node: OpView) -> Call:
    a = node.args
    if a["kernel"] is None:
        return Call(F.adaptive_avg_pool2d, (1,))
    return Call(F.avg_pool2d, kwargs={"kernel_size": a["kernel"], "stride": a["stride"], "padding": a["padding"],
                                      "ceil_mode": a["ceil"], "count_include_pad": a["count_include_pad"]})


@lowering("subsample")
def _subsample(node: OpView) -> Call:
    step = slice(None, None, node.args["stride"])
    return Call(operator.getitem, ((slice(None), slice(None), step, step),))


@lowering("pad_channels")
def _pad_channels(node: OpView) -> Call:
    return Call(F.pad, ((0, 0, 0, 0, 0, node.shape[0] - node.inputs[0][0]),))


def lower(network: Network, *, zero_init_residual: bool = False, seed: int | None = 0) -> fx.GraphModule:
    """The network as an `fx.GraphModule`, initialised as torchvision does (He normal, fan_out).

    `seed` makes the initialisation reproducible without touching the global RNG (None: use it).
    `zero_init_residual` zeroes the last BatchNorm of each residual branch, so each block starts
    as its shortcut; a branch that ends in a conv (pre-activation units) is left as it is.
    """
    graph = network.graph
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        root, code = _build(graph)
        _initialise(root)
    if zero_init_residual:
        for node in _residual_ends(graph):
            nn.init.zeros_(root.get_submodule(node).weight)
    return fx.GraphModule(root, code, class_name=_class_name(network.name))


def _build(graph: nx.DiGraph) -> tuple[nn.Module, fx.Graph]:
    """The modules at their node ids, and the forward as an fx graph, in the IR's topological order."""
    root = nn.Module()
    code = fx.Graph()
    values: dict[str, fx.Node] = {}
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node in nx.lexicographical_topological_sort(graph, key=order.__getitem__):
        attrs = graph.nodes[node]
        args = [values[p] for p in inputs(graph, node)]
        if attrs["op"] == "input":
            values[node] = code.placeholder("x")
            continue
        if attrs["op"] == "output":
            code.output(args[0])
            continue
        if attrs["op"] not in LOWERINGS:
            raise Unsupported(f"{node}: the op `{attrs['op']}` has no PyTorch lowering "
                              f"(known ops: {', '.join(sorted(LOWERINGS))})")
        lowered = LOWERINGS[attrs["op"]](_view(graph, node))
        name = node.replace(".", "_")
        if lowered is None:
            values[node] = args[0]
        elif isinstance(lowered, nn.Module):
            _set_submodule(root, node, lowered)
            values[node] = code.create_node("call_module", node, tuple(args), name=name)
        else:
            values[node] = code.create_node("call_function", lowered.function, (*args, *lowered.args),
                                            dict(lowered.kwargs), name=name)
    return root, code


def _view(graph: nx.DiGraph, node: str) -> OpView:
    preds = inputs(graph, node)
    owns = len(preds) == 1 and graph.nodes[preds[0]]["op"] in _FRESH and graph.out_degree(preds[0]) == 1
    attrs = graph.nodes[node]
    return OpView(attrs["args"], [graph.nodes[p]["shape"] for p in preds], attrs["shape"], owns)


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    """Place `module` at a dotted path, creating the containers on the way."""
    *path, name = target.split(".")
    parent = root
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(name, module)


def _initialise(root: nn.Module) -> None:
    """torchvision's initialisation: He normal (fan_out) convs, BatchNorm 1 and 0, default linears."""
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _residual_ends(graph: nx.DiGraph) -> list[str]:
    """The BatchNorm that ends the residual branch (input 0) of each `add`, where one does."""
    ends = []
    for node in graph:
        if graph.nodes[node]["op"] != "add":
            continue
        current = inputs(graph, node)[0]
        while graph.nodes[current]["op"] in _ZERO_PRESERVING:
            current = inputs(graph, current)[0]
        if graph.nodes[current]["op"] == "batchnorm":
            ends.append(current)
    return ends


def _class_name(name: str) -> str:
    """`wide_resnet50_2` -> `WideResnet50_2`: the network's name as a Python class name."""
    joined = ""
    for part in filter(None, re.split(r"[^0-9A-Za-z]+", name)):
        joined += f"_{part}" if part[0].isdigit() and joined else part[0].upper() + part[1:]
    return joined if joined.isidentifier() else f"Net{joined}"
