"""Lower the graph IR to a PyTorch module class: submodules at the node ids, forward generated with torch.fx.

The class is generated once per network (`Network.torch_class`); instantiating it only builds and
initialises the submodules, as a hand-written class would. Each op maps to a module factory (ops with
parameters or train/eval state) or to a call in the generated forward (parameter-free ops); adding an op
is one `@lowering` function here. The fx node of IR node `layer2.0.conv1` is named `layer2_0_conv1`;
pass-through ops (identity, dropout 0, 1x1 pools at stride 1) have none.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import linecache
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn

from resdsl.ir.graph import Scope, inputs
from resdsl.ir.ops import Args, Shape

from . import Unsupported

if TYPE_CHECKING:
    from resdsl.network import Network

# Ops whose result is a new tensor that no other op aliases, so a sole consumer may overwrite it.
_FRESH = frozenset({"conv", "batchnorm", "linear", "add", "maxpool", "avgpool", "pad_channels"})
# Parameter-free ops that keep zeros zero: a BatchNorm followed only by these ends its branch.
_ZERO_PRESERVING = frozenset({"relu", "dropout", "identity"})
# Numbers the generated sources, so that each has its own name in tracebacks.
_generated = itertools.count()


@dataclass(frozen=True)
class OpView:
    """What a lowering sees of one IR node: its arguments and the shapes around it."""

    args: Args
    inputs: list[Shape]
    shape: Shape
    owns_input: bool = False  # the first input is a fresh tensor read by this op alone


@dataclass(frozen=True)
class Call:
    """A parameter-free op in the generated forward: `function(*inputs, *args, **kwargs)`."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


ModuleFactory = Callable[[], nn.Module]
Lowered = ModuleFactory | Call | None  # None: the op passes its input through unchanged
LOWERINGS: dict[str, Callable[[OpView], Lowered]] = {}


def lowering(op: str) -> Callable[[Callable[[OpView], Lowered]], Callable[[OpView], Lowered]]:
    """Register the PyTorch lowering of an IR op."""

    def register(function: Callable[[OpView], Lowered]) -> Callable[[OpView], Lowered]:
        LOWERINGS[op] = function
        return function

    return register


@lowering("conv")
def _conv(node: OpView) -> ModuleFactory:
    a = node.args
    return partial(nn.Conv2d, node.inputs[0][0], a["out"], a["kernel"], stride=a["stride"], padding=a["padding"],
                   dilation=a["dilation"], groups=a["groups"], bias=a["bias"])


@lowering("batchnorm")
def _batchnorm(node: OpView) -> ModuleFactory:
    norm = nn.BatchNorm2d if len(node.shape) == 3 else nn.BatchNorm1d
    return partial(norm, node.shape[0], eps=node.args["eps"], momentum=node.args["momentum"])


@lowering("linear")
def _linear(node: OpView) -> ModuleFactory:
    return partial(nn.Linear, node.inputs[0][0], node.args["out"], bias=node.args["bias"])


@lowering("dropout")
def _dropout(node: OpView) -> Lowered:
    return partial(nn.Dropout, node.args["p"]) if node.args["p"] > 0 else None


@lowering("identity")
def _identity(node: OpView) -> Lowered:
    return None


@lowering("relu")
def _relu(node: OpView) -> Call:
    return Call(F.relu, kwargs={"inplace": True} if node.owns_input else {})


@lowering("add")
def _add(node: OpView) -> Call:
    return Call(operator.iadd if node.owns_input else operator.add)


@lowering("flatten")
def _flatten(node: OpView) -> Call:
    return Call(torch.flatten, (1,))


def _is_identity_pool(a: Args) -> bool:
    """A 1x1 window at stride 1 without padding (option D's pool where the stride is 1) copies its input."""
    return a["kernel"] == (1, 1) and a["stride"] == (1, 1) and a["padding"] == (0, 0)


@lowering("maxpool")
def _maxpool(node: OpView) -> Call | None:
    a = node.args
    if _is_identity_pool(a):
        return None
    return Call(F.max_pool2d, kwargs={"kernel_size": a["kernel"], "stride": a["stride"], "padding": a["padding"],
                                      "ceil_mode": a["ceil"]})


@lowering("avgpool")
def _avgpool(node: OpView) -> Call | None:
    a = node.args
    if a["kernel"] is None:
        return Call(F.adaptive_avg_pool2d, (1,))
    if _is_identity_pool(a):
        return None
    return Call(F.avg_pool2d, kwargs={"kernel_size": a["kernel"], "stride": a["stride"], "padding": a["padding"],
                                      "ceil_mode": a["ceil"], "count_include_pad": a["count_include_pad"]})


@lowering("subsample")
def _subsample(node: OpView) -> Call:
    step = slice(None, None, node.args["stride"])
    return Call(operator.getitem, ((slice(None), slice(None), step, step),))


@lowering("pad_channels")
def _pad_channels(node: OpView) -> Call:
    return Call(F.pad, ((0, 0, 0, 0, 0, node.shape[0] - node.inputs[0][0]),))


class GeneratedModule(nn.Module):
    """Base of the module classes generated from networks: each has its own `graph`, `code` and `forward`.

    Instantiating one builds the submodules at their node ids and initialises them as torchvision does
    (He normal, fan_out convs; BatchNorm 1 and 0; PyTorch's default linears). `seed` makes the weights
    reproducible without touching the global RNG (None: draw from it). `zero_init_residual` zeroes the
    last BatchNorm of each residual branch, so each block starts as its shortcut; a branch that ends in
    a conv (pre-activation units) is left as it is.
    """

    graph: ClassVar[fx.Graph]  # the fx graph `forward` was generated from; node names are the IR ids
    code: ClassVar[str]  # the source of `forward`
    _layout: ClassVar[tuple[Submodule, ...]]
    _residual_ends: ClassVar[tuple[str, ...]]

    def __init__(self, *, seed: int | None = 0, zero_init_residual: bool = False) -> None:
        super().__init__()
        with _seeded(seed):
            built: dict[str, nn.Module] = {"": self}
            for path, parent, name, make in self._layout:
                built[path] = module = make()
                built[parent].add_module(name, module)
            _initialise(self)
        if zero_init_residual:
            for path in self._residual_ends:
                nn.init.zeros_(built[path].weight)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as an `fx.GraphModule` of the same submodules and code: loading it needs torch, not resdsl."""
        return fx.GraphModule(self, copy.deepcopy(self.graph), type(self).__name__).__reduce__()

    def __deepcopy__(self, memo: dict[int, Any]) -> GeneratedModule:
        """A deep copy of the same generated class (pickling, above, gives a GraphModule instead)."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        return clone


class Submodule(NamedTuple):
    """One submodule of a generated class, in construction order: a lowered op or a container."""

    path: str
    parent: str
    name: str
    make: ModuleFactory

    @classmethod
    def at(cls, path: str, make: ModuleFactory) -> Submodule:
        parent, _, name = path.rpartition(".")
        return cls(path, parent, name, make)


def module_class(network: Network) -> type[GeneratedModule]:
    """Generate the network's module class: `forward` is the fx code of the graph, compiled once."""
    graph = network.graph
    layout, code = _build(graph)
    python = code.python_code(root_module="self")
    filename = f"<resdsl {network.name} {next(_generated)}>"
    linecache.cache[filename] = (len(python.src), None, python.src.splitlines(keepends=True), filename)
    namespace = dict(python.globals)
    exec(compile(python.src, filename, "exec"), namespace)
    attributes = {"forward": namespace["forward"], "graph": code, "code": python.src, "_layout": tuple(layout),
                  "_residual_ends": tuple(_residual_ends(graph)), "__module__": __name__}
    return type(_class_name(network.name), (GeneratedModule,), attributes)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from a fresh RNG seeded with `seed`, leaving the global one as it was (None: use the global one)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that would reseed the GPUs' RNGs too
        yield


def _build(graph: nx.DiGraph) -> tuple[list[Submodule], fx.Graph]:
    """The submodules to build, and the forward as an fx graph, in the IR's topological order."""
    layout: list[Submodule] = []
    containers: set[str] = set()
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
        elif isinstance(lowered, Call):
            values[node] = code.create_node("call_function", lowered.function, (*args, *lowered.args),
                                            dict(lowered.kwargs), name=name)
        else:
            layout += _containers(node, attrs["scope"], containers)
            layout.append(Submodule.at(node, lowered))
            values[node] = code.create_node("call_module", node, tuple(args), name=name)
    return layout, code


def _containers(path: str, scope: Scope, existing: set[str]) -> list[Submodule]:
    """The containers `path` needs that are not built yet, outermost first, each a class named for what it holds."""
    parts = path.split(".")
    missing = []
    for depth in range(1, len(parts)):
        container = ".".join(parts[:depth])
        if container not in existing:
            existing.add(container)
            missing.append(Submodule.at(container, _container_class(container, scope)))
    return missing


def _container_class(path: str, scope: Scope) -> type[nn.Module]:
    """The container class for `path`, named for what it holds: `Stage`, `Bottleneck`, `ShortcutB`."""
    if path == scope.stage and scope.section == "stage":
        return _named_container("Stage")
    if path == f"{scope.stage}.{scope.block}" and scope.block_type:
        return _named_container(_class_name(scope.block_type))
    if scope.branch == "shortcut" and path.count(".") == 2 and scope.shortcut:
        return _named_container(_class_name(f"shortcut_{scope.shortcut}"))
    return nn.Module


@cache
def _named_container(name: str) -> type[nn.Module]:
    """One empty module class per name, shared by every container that holds the same kind of thing."""
    return type(name, (nn.Module,), {"__module__": __name__})


def _view(graph: nx.DiGraph, node: str) -> OpView:
    preds = inputs(graph, node)
    owns = graph.nodes[preds[0]]["op"] in _FRESH and graph.out_degree(preds[0]) == 1
    attrs = graph.nodes[node]
    return OpView(attrs["args"], [graph.nodes[p]["shape"] for p in preds], attrs["shape"], owns)


def _initialise(root: nn.Module) -> None:
    """torchvision's initialisation: He normal (fan_out) convs; BatchNorms (1 and 0) and linears keep PyTorch's."""
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


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
    """`wide_resnet50_2` -> `WideResnet50_2`: a spec's name as a Python class name."""
    joined = ""
    for part in filter(None, re.split(r"[^0-9A-Za-z]+", name)):
        joined += f"_{part}" if part[0].isdigit() and joined else part[0].upper() + part[1:]
    return joined if joined.isidentifier() else f"Net{joined}"
