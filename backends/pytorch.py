"""Lower the graph IR to a tree of PyTorch modules that follows the node ids.

`layer2.0.conv1` is the module `conv1` of block `0` of stage `layer2`, so state-dict keys are the
IR's ids. A stage is an `nn.Sequential` of its blocks; a block, its shortcut (`downsample`) and any
other group of layers with one input and one output is a module whose `forward` is generated from
the IR with torch.fx's code generator — one class per distinct forward, shared by every block of
the same definition and shortcut case (`print(model.layer1[0].code)`). A chain of modules is an
`nn.Sequential`; a group with several inputs or outputs (timm's `paths` of SK) only holds its
children, like `nn.ModuleList`. Every op that reads one tensor and has a torch.nn module is one
(so forward hooks and torchvision's IntermediateLayerGetter see it); ops without one (option A's
halves, channel slices) and ops that combine tensors are calls in the generated forward.
Lowerings are keyed by op class: adding an op is one `@lowers` function here.
"""

from __future__ import annotations

import contextlib
import copy
import copyreg
import itertools
import linecache
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from resdsl.ir import ops
from resdsl.ir.graph import IRGraph, inputs
from resdsl.ir.ops import Args, Op, Shape

from . import Unsupported

if TYPE_CHECKING:
    from resdsl.network import Network

_generated = itertools.count()  # numbers the generated sources, so that each has its own name in tracebacks


# --- lowerings, one per op class --------------------------------------------------------------


@dataclass(frozen=True)
class OpView:
    """What a lowering sees of one IR node: its arguments and the shapes around it."""

    args: Args
    inputs: list[Shape]
    shape: Shape
    owns_input: bool = False  # the first input is a fresh tensor read by this op alone


ModuleFactory = Callable[[], nn.Module]  # a lowered op's: builds the module, its initialisation left to _initialise


Emit = Callable[[fx.Graph, str, list[fx.Node], str], fx.Node]  # (graph, module path, inputs, name) -> output


@dataclass(frozen=True)
class Lowered:
    """An op in PyTorch: a module at the node's path, a function called in the forward, or nodes to emit.

    The forward calls the module if there is one, else `function(*inputs, *args, **kwargs)`; `emit`, when
    given, writes the fx nodes itself (channel_conv reshapes around its Conv1d). None of them: the op
    passes its input through. Calls use torch and operator only, so that a pickled model needs no resdsl.
    """

    module: ModuleFactory | None = None
    function: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    emit: Emit | None = None

    @property
    def passes_through(self) -> bool:
        return self.module is None and self.function is None and self.emit is None


Lowering = Callable[[OpView], Lowered]
LOWERINGS: dict[type[Op], Lowering] = {}


def lowers(op: type[Op]) -> Callable[[Lowering], Lowering]:
    """Register the PyTorch lowering of an op class."""

    def register(function: Lowering) -> Lowering:
        LOWERINGS[op] = function
        return function

    return register


def _module(module_class: type[nn.Module], *args: Any, **kwargs: Any) -> Lowered:
    return Lowered(module=_uninitialised_factory(module_class, args, tuple(sorted(kwargs.items()))))


@cache
def _uninitialised_factory(module_class: type[nn.Module], args: tuple[Any, ...],
                           kwargs: tuple[tuple[str, Any], ...]) -> ModuleFactory:
    """One factory per module configuration, shared by every network, so that its prototype is built once."""
    return Copies(partial(module_class, *args, **dict(kwargs)))


class Copies:
    """A module factory that builds its module once on the meta device and then hands out copies of it.

    A copy has the module's class and attributes, its own containers (parameters, buffers, hooks, children) and
    its own uninitialised tensors on the default device: what `make()` returns, at a fraction of the cost, since
    Python's work per module (`nn.Module.__init__`, `__setattr__` per attribute) is most of building a deep net of
    small layers. The tensors are left for `_initialise`, as `make` leaves them.
    """

    def __init__(self, make: ModuleFactory) -> None:
        self.make = make
        self.prototypes: dict[torch.dtype, nn.Module] = {}  # by default dtype, which `make` builds with

    def __call__(self) -> nn.Module:
        dtype = torch.get_default_dtype()
        prototype = self.prototypes.get(dtype)
        if prototype is None:
            with torch.device("meta"):  # shapes and dtypes only: no memory, nothing drawn
                prototype = self.prototypes[dtype] = self.make()
        return _copy_module(prototype)


def _copy_module(prototype: nn.Module) -> nn.Module:
    """A module of the prototype's class and attributes, with its own containers and uninitialised tensors."""
    module = object.__new__(type(prototype))
    state = vars(module)
    for name, value in vars(prototype).items():
        if name == "_parameters":
            value = {key: None if p is None else nn.Parameter(torch.empty(p.shape, dtype=p.dtype), p.requires_grad)
                     for key, p in value.items()}
        elif name == "_buffers":
            value = {key: None if b is None else torch.empty(b.shape, dtype=b.dtype) for key, b in value.items()}
        elif isinstance(value, (dict, list, set)):
            value = value.copy()
        elif isinstance(value, torch.Tensor):
            raise TypeError(f"{type(prototype).__name__} holds a tensor outside its parameters and buffers")
        state[name] = value
    return module


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Lowered:
    return Lowered(function=function, args=args, kwargs=kwargs)


@lowers(ops.Conv)
def _conv(node: OpView) -> Lowered:
    a = node.args
    return _module(nn.Conv2d, node.inputs[0][0], a["out"], a["kernel"], stride=a["stride"], padding=a["padding"],
                   dilation=a["dilation"], groups=a["groups"], bias=a["bias"])


def _emit_channel_conv(graph: fx.Graph, target: str, inputs: list[fx.Node], name: str) -> fx.Node:
    """ECA's conv: the Cx1x1 map viewed as one row of C values, convolved, and viewed back."""
    x = inputs[0]
    row = graph.call_method("flatten", (x, 1))
    convolved = graph.create_node("call_module", target, (graph.call_method("unsqueeze", (row, 1)),), name=name)
    return graph.call_method("view_as", (convolved, x))


@lowers(ops.ChannelConv)
def _channel_conv(node: OpView) -> Lowered:
    k = node.args["kernel"]
    return Lowered(module=_uninitialised_factory(nn.Conv1d, (1, 1, k), (("bias", False), ("padding", (k - 1) // 2))),
                   emit=_emit_channel_conv)


@lowers(ops.BatchNorm)
def _batchnorm(node: OpView) -> Lowered:
    norm = nn.BatchNorm2d if len(node.shape) == 3 else nn.BatchNorm1d
    return _module(norm, node.shape[0], eps=node.args["eps"], momentum=node.args["momentum"])


@lowers(ops.GroupNorm)
def _groupnorm(node: OpView) -> Lowered:
    return _module(nn.GroupNorm, node.args["groups"], node.shape[0], eps=node.args["eps"])


@lowers(ops.Linear)
def _linear(node: OpView) -> Lowered:
    return _module(nn.Linear, node.inputs[0][0], node.args["out"], bias=node.args["bias"])


@lowers(ops.ReLU)
def _relu(node: OpView) -> Lowered:
    return _module(nn.ReLU, inplace=True) if node.owns_input else _module(nn.ReLU)


# Ops that are a torch.nn module taking no arguments.
for _op, _module_class in ((ops.SiLU, nn.SiLU), (ops.GELU, nn.GELU), (ops.HardSwish, nn.Hardswish),
                           (ops.Sigmoid, nn.Sigmoid), (ops.HardSigmoid, nn.Hardsigmoid), (ops.Flatten, nn.Flatten)):
    lowers(_op)(lambda node, module_class=_module_class: _module(module_class))


@lowers(ops.Softmax)
def _softmax(node: OpView) -> Lowered:
    branches = node.args["branches"]
    if branches is None:
        return _module(nn.Softmax, dim=1)

    def across(graph: fx.Graph, target: str, inputs: list[fx.Node], name: str) -> fx.Node:
        """Softmax across `branches` equal groups of channels, channel by channel (timm's SK attention)."""
        grouped = graph.call_method("unflatten", (inputs[0], 1, (branches, -1)))
        return graph.call_method("flatten", (graph.call_method("softmax", (grouped, 1)), 1, 2))

    return Lowered(emit=across)


def _is_identity_pool(a: Args) -> bool:
    """A 1x1 window at stride 1 without padding (option D's pool where the stride is 1) copies its input."""
    return a["kernel"] == (1, 1) and a["stride"] == (1, 1) and a["padding"] == (0, 0)


@lowers(ops.MaxPool)
def _maxpool(node: OpView) -> Lowered:
    a = node.args
    if a["kernel"] is None:
        return _module(nn.AdaptiveMaxPool2d, 1)
    if _is_identity_pool(a):
        return Lowered()
    return _module(nn.MaxPool2d, a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil"])


@lowers(ops.AvgPool)
def _avgpool(node: OpView) -> Lowered:
    a = node.args
    if a["kernel"] is None:
        return _module(nn.AdaptiveAvgPool2d, 1)
    if _is_identity_pool(a):
        return Lowered()
    return _module(nn.AvgPool2d, a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil"],
                   count_include_pad=a["count_include_pad"])


@lowers(ops.Add)
def _add(node: OpView) -> Lowered:
    return _call(operator.iadd if node.owns_input else operator.add)


@lowers(ops.Mul)
def _mul(node: OpView) -> Lowered:
    return _call(operator.mul)


def _emit_concat(graph: fx.Graph, target: str, inputs: list[fx.Node], name: str) -> fx.Node:
    return graph.create_node("call_function", torch.cat, (list(inputs), 1), name=name)


@lowers(ops.Concat)
def _concat(node: OpView) -> Lowered:
    return Lowered(emit=_emit_concat)


@lowers(ops.SliceChannels)
def _slice_channels(node: OpView) -> Lowered:
    return _call(operator.getitem, (slice(None), slice(node.args["start"], node.args["stop"])))


@lowers(ops.Subsample)
def _subsample(node: OpView) -> Lowered:
    step = slice(None, None, node.args["stride"])
    return _call(operator.getitem, (slice(None), slice(None), step, step))


@lowers(ops.PadChannels)
def _pad_channels(node: OpView) -> Lowered:
    return _call(F.pad, (0, 0, 0, 0, 0, node.shape[0] - node.inputs[0][0]))


@lowers(ops.Dropout)
def _dropout(node: OpView) -> Lowered:
    return _module(nn.Dropout, node.args["p"]) if node.args["p"] > 0 else Lowered()


@lowers(ops.Identity)
def _identity(node: OpView) -> Lowered:
    return Lowered()


# --- the module classes -------------------------------------------------------------------------


class _Generated:
    """Pickling and copying shared by the generated classes: a pickle needs torch, not resdsl."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        clone: Any = type(self).__new__(type(self))  # a module: nn.Module gives __setstate__
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        return clone


class GeneratedModule(_Generated, nn.Module):
    """A module whose `forward` is generated from the IR; each class has its own `graph` and `code`."""

    graph: ClassVar[fx.Graph]  # the fx graph `forward` was generated from
    code: ClassVar[str]  # the source of `forward`

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as an `fx.GraphModule` of the same submodules and code."""
        return fx.GraphModule(self, copy.deepcopy(self.graph), type(self).__name__).__reduce__()


class GeneratedSequential(_Generated, nn.Sequential):
    """A named nn.Sequential (a stage, a shortcut); pickled as a plain nn.Sequential."""

    def __reduce__(self) -> tuple[Any, ...]:
        # copyreg._reconstructor is what object.__reduce_ex__ itself returns; typeshed does not list it
        return copyreg._reconstructor, (nn.Sequential, object, None), self.__dict__  # pyright: ignore[reportAttributeAccessIssue]


@dataclass(frozen=True)
class FeatureInfo:
    """One output of a feature extractor: its name, channels, and its stride over the input (timm's reduction)."""

    name: str
    channels: int
    reduction: int


class NetworkModule(GeneratedModule):
    """Base of the network classes: instantiating one builds the module tree and initialises it.

    Initialisation is torchvision's: He normal (fan_out) convs, BatchNorm and GroupNorm at 1 and 0,
    PyTorch's default linears — the same draws in the same order, so equal to torchvision's weights
    after the same `torch.manual_seed`. `seed` makes the weights reproducible without touching the
    global RNG (None: draw from it). `zero_init_residual` zeroes the last norm (or bias-free conv) of
    each residual branch, so each block starts as its shortcut.
    """

    _layout: ClassVar[tuple[Submodule, ...]]
    _residual_ends: ClassVar[tuple[str, ...]]
    _left_out: ClassVar[tuple[Submodule, ...]] = ()  # built and initialised, then removed (a feature extractor)
    feature_info: ClassVar[tuple[FeatureInfo, ...]] = ()

    def __init__(self, *, seed: int | None = None, zero_init_residual: bool = False) -> None:
        super().__init__()
        built: dict[str, nn.Module] = {"": self}
        for path, parent, name, make in self._layout:  # no draws yet: the lowered modules defer their init
            built[path] = module = make()
            built[parent].add_module(name, module)
        with _seeded(seed):
            _initialise(self, list(built.values()))
        if zero_init_residual:
            zeroed = [path for path in self._residual_ends if path in built]
            if not zeroed:
                warnings.warn(f"zero_init_residual: {type(self).__name__} has no residual branch ending in a norm "
                              "or a bias-free conv (an `add shortcut`), so nothing was zeroed", ZeroInitWarning,
                              stacklevel=3)
            for path in zeroed:
                nn.init.zeros_(cast(torch.Tensor, built[path].weight))
        for path, parent, name, _ in self._left_out:
            if parent in built:
                delattr(built[parent], name)
                del built[path]


class ZeroInitWarning(UserWarning):
    """`zero_init_residual=True` found nothing to zero; `warnings.simplefilter("error", ZeroInitWarning)` makes it
    an error."""


class Submodule(NamedTuple):
    """One submodule of a network, in construction order: a lowered op or a group."""

    path: str
    parent: str
    name: str
    make: ModuleFactory


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from a fresh RNG seeded with `seed`, leaving the global one as it was (None: use the global one)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that would reseed the GPUs' RNGs too
        yield


_DRAWLESS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)  # their default initialisation draws nothing (1 and 0)


def _initialise(root: nn.Module, built: list[nn.Module]) -> None:
    """torchvision's initialisation, each weight drawn once: PyTorch's defaults (`reset_parameters`) in
    construction order (`built`), then He normal (fan_out) for every conv.

    torchvision also draws each conv's default weight, then overwrites it. Here those draws are not made: the
    generator is moved past them instead, so every later draw, and so every weight, is torchvision's.
    """
    skipped = 0  # draws owed to the CPU generator, skipped at once before the next draw
    for module in built:
        if isinstance(module, nn.Conv2d) and module.weight.device.type == "cpu":
            skipped += module.weight.numel()  # PyTorch's default draws the weight, then the bias
            if module.bias is not None:
                skipped = _skip(skipped)
                bound = 1 / math.sqrt(module.weight[0].numel())  # 1 / sqrt(fan_in), nn.Conv2d's default
                nn.init.uniform_(module.bias, -bound, bound)
        elif callable(reset := getattr(module, "reset_parameters", None)):
            if not isinstance(module, _DRAWLESS):
                skipped = _skip(skipped)
            reset()
    _skip(skipped)
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _skip(count: int) -> int:
    """Move the CPU generator past `count` draws; none are owed after."""
    if count:
        skip_draws(torch.default_generator, count)
    return 0


def skip_draws(generator: torch.Generator, count: int) -> None:
    """Move a CPU generator past `count` 32-bit draws, as a float tensor's `uniform_` of `count` values would.

    torch's CPU generator is MT19937, as numpy's is, which steps faster than torch draws: the state goes over
    and back. In torch's state bytes (CPUGeneratorImplState) `left` is an int32 at 8, `next` a uint64 at 16, the
    624 words uint64s from 24; torch twists when `left` counts down to 0, numpy when `pos` reaches 624, so
    pos = 625 - left.
    """
    state = generator.get_state()
    raw = state.numpy()
    words, left, next_ = raw[24:24 + 8 * 624].view(np.uint64), raw[8:12].view(np.int32), raw[16:24].view(np.uint64)
    engine = _mt19937()
    engine.state = {"bit_generator": "MT19937", "state": {"key": words.tolist(), "pos": 625 - int(left[0])}}
    engine.random_raw(count, output=False)
    after = engine.state["state"]
    words[:], left[0], next_[0] = after["key"], 625 - after["pos"], after["pos"]
    generator.set_state(state)


@cache
def _mt19937() -> np.random.MT19937:
    """One numpy engine, its state set on each use (seeding a new one costs more than the skip)."""
    return np.random.MT19937(0)


_DRAWLESS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)  # their default initialisation draws nothing (1 and 0)


# --- from the IR to the tree -------------------------------------------------------------------


@dataclass
class Group:
    """A path that holds layers (`layer1`, `layer1.0`, `layer1.0.downsample`): its children and its region."""

    path: str
    children: dict[str, Group | str] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    source: str | None = None  # the one tensor it reads, if there is one
    exit: str | None = None  # the one node whose output leaves it, if there is one
    kind: str = "holder"  # "forward", "sequential" or "holder"
    name: str = ""  # its class name


class _Lowering:
    """One network's IR lowered: the tree of groups, each node's lowering, and the layout to build."""

    def __init__(self, network: Network, escaping: frozenset[str] = frozenset()) -> None:
        self.network = network
        self.graph: IRGraph = network.graph
        self.order = {node: i for i, node in enumerate(self.graph.nodes)}
        self.lowered: dict[str, Lowered] = {}
        for node in self.graph:  # in topological order, so that each node's inputs are lowered before it
            if not self.graph.nodes[node].op.internal:
                self.lowered[node] = self._lower(node, escaping)
        self.root = self._tree()
        self.groups: dict[str, Group] = {}
        self._classify(self.root)

    def _lower(self, node: str, escaping: frozenset[str]) -> Lowered:
        ir_node = self.graph.nodes[node]
        lowering = LOWERINGS.get(type(ir_node.op))
        if lowering is None:
            known = ", ".join(sorted(op.name for op in LOWERINGS))
            raise Unsupported(f"{node}: the op `{ir_node.op}` has no PyTorch lowering (known ops: {known})")
        preds = inputs(self.graph, node)
        first = self.graph.nodes[preds[0]] if preds else None
        # a pass-through (e.g. a 1x1 stride-1 pool) hands on a tensor that is not its own to give
        owns = (first is not None and first.op.fresh and len(self.graph.succ[preds[0]]) == 1
                and preds[0] not in escaping and not self.lowered[preds[0]].passes_through)
        view = OpView(ir_node.args or {}, [self.graph.known_shape(p) for p in preds], self.graph.known_shape(node),
                      owns)
        return lowering(view)

    def value(self, node: str | None) -> str:
        """The node whose tensor `node` outputs: itself, or for a pass-through op, its input's value.

        `node` is a group's source or exit, which every group called as a unit has.
        """
        assert node is not None, "a group called as a unit has one source and one exit"
        while node in self.lowered and self.lowered[node].passes_through:
            node = inputs(self.graph, node)[0]
        return node

    # --- the tree -------------------------------------------------------------------------

    def _tree(self) -> Group:
        root = Group("")
        for node in self.graph:
            if node not in self.lowered:
                continue
            group = root
            parts = node.split(".")
            for depth, part in enumerate(parts[:-1], start=1):
                child = group.children.get(part)
                if child is None:
                    child = group.children[part] = Group(".".join(parts[:depth]))
                assert isinstance(child, Group), "a node's path never runs through another node (check_path)"
                group.nodes.append(node)
                group = child
            group.nodes.append(node)
            group.children[parts[-1]] = node
        return root

    def _classify(self, group: Group) -> None:
        """Find each group's region and kind, innermost first (a chain needs its children's kinds)."""
        self.groups[group.path] = group
        for child in group.children.values():
            if isinstance(child, Group):
                self._classify(child)
        members = set(group.nodes)
        sources = {p for n in group.nodes for p in self.graph.pred[n] if p not in members}
        exits = [n for n in group.nodes if any(s not in members for s in self.graph.succ[n])]
        if group.path == "":
            group.source, group.exit, group.kind = "input", self.graph.output, "forward"
            group.name = _class_name(self.network.name)
            return
        if len(sources) == 1 and len(exits) == 1 and self.order[next(iter(sources))] < self.order[group.nodes[0]]:
            group.source, group.exit = next(iter(sources)), exits[0]
            group.kind = "sequential" if self._is_chain(group) else "forward"
        group.name = self._name(group)

    def _is_chain(self, group: Group) -> bool:
        """Whether the group's units are modules (or callable groups) each reading the one before."""
        current = self.value(group.source)
        for unit in self.units(group):
            if isinstance(unit, Group):
                if unit.kind == "holder" or self.value(unit.source) != current:
                    return False
                current = self.value(unit.exit)
                continue
            lowered = self.lowered[unit]
            if lowered.passes_through:
                continue
            if lowered.function is not None or [self.value(p) for p in inputs(self.graph, unit)] != [current]:
                return False
            current = unit
        return current == self.value(group.exit)

    def _name(self, group: Group) -> str:
        """The class name of a group: `Stage`, the block's (`BottleneckV1_5`), `ShortcutB`, or the block called."""
        scope = self.graph.nodes[group.nodes[0]].scope
        if scope.section == "stage" and group.path == scope.stage:
            return "Stage"
        if scope.block is not None and group.path == f"{scope.stage}.{scope.block_name}" and scope.block_type:
            return _class_name(scope.block_type)
        if scope.branch == "shortcut" and group.path.endswith(".downsample") and scope.shortcut:
            return _class_name(f"shortcut_{scope.shortcut}")
        called = self.graph.calls.get(group.path)
        return _class_name(called) if called else ""

    def units(self, group: Group, inline: frozenset[str] = frozenset()) -> list[Group | str]:
        """What the group's forward calls, in a valid order: leaves, and child groups that are callable."""
        found: list[Group | str] = []

        def collect(g: Group) -> None:
            for child in g.children.values():
                if isinstance(child, Group) and (child.kind == "holder" or child.path in inline):
                    collect(child)
                else:
                    found.append(child)

        collect(group)
        return sorted(found, key=lambda u: self.order[u.nodes[0] if isinstance(u, Group) else u])

    # --- code -----------------------------------------------------------------------------

    def forward_graph(self, group: Group, outputs: list[tuple[str, str]] | None = None,
                      inline: frozenset[str] = frozenset()) -> fx.Graph:
        """The fx graph of a group's forward: its units called in order, relative to the group.

        `outputs`: return these nodes' values as a dict (a feature extractor) instead of the group's exit.
        """
        code = fx.Graph()
        prefix = f"{group.path}." if group.path else ""
        values = {self.value(group.source): code.placeholder("x")}
        needed = _needed(self.graph, outputs) if outputs is not None else None
        for unit in self.units(group, inline):
            if isinstance(unit, Group):
                if needed is not None and unit.exit not in needed:
                    continue
                target, exit_ = unit.path.removeprefix(prefix), unit.exit
                assert exit_ is not None, "a group called as a unit has one exit"
                values[exit_] = code.create_node("call_module", target, (values[self.value(unit.source)],),
                                                 name=_fx_name(target))
                values[exit_].meta["ir"] = target
                continue
            if needed is not None and unit not in needed:
                continue
            lowered = self.lowered[unit]
            if lowered.passes_through:
                continue
            args = [values[self.value(p)] for p in inputs(self.graph, unit)]
            target, name = unit.removeprefix(prefix), _fx_name(unit.removeprefix(prefix))
            if lowered.emit is not None:
                values[unit] = lowered.emit(code, target, args, name)
            elif lowered.module is not None:
                values[unit] = code.create_node("call_module", target, tuple(args), name=name)
            else:
                assert lowered.function is not None, "a lowering is a module, a function or nodes to emit"
                values[unit] = code.create_node("call_function", lowered.function, (*args, *lowered.args),
                                                dict(lowered.kwargs), name=name)
            values[unit].meta["ir"] = target  # the IR node, relative to the group: for tools that walk the tree
        if outputs is None:
            code.output(values[self.value(group.exit)])
        else:
            code.output({name: values[self.value(node)] for name, node in outputs})
        return code

    def layout(self, targets: set[str] | None = None) -> list[Submodule]:
        """Every submodule in construction order (as a hand-written constructor would build them).

        `targets`: build only what these call_module targets need (a feature extractor's forward).
        """

        def kept(path: str) -> bool:
            return targets is None or any(path == t or path.startswith(f"{t}.") or t.startswith(f"{path}.")
                                          for t in targets)

        holding = {path for node, lowered in self.lowered.items() if lowered.module is not None
                   for path in _prefixes(node)}
        layout: list[Submodule] = []
        built: set[str] = set()
        for node, lowered in self.lowered.items():
            for path in _prefixes(node):
                group = self.groups[path]
                if path not in built and kept(path) and (group.kind != "holder" or path in holding):
                    built.add(path)
                    layout.append(_submodule(path, _copies(self.group_class(group))))
            if lowered.module is not None and kept(node):
                layout.append(_submodule(node, lowered.module))
        return layout

    def group_class(self, group: Group) -> ModuleFactory:
        if group.kind == "sequential":
            return _sequential_class(group.name) if group.name else nn.Sequential
        if group.kind == "forward":
            return _forward_class(group.name or "Group", _source(self.forward_graph(group)))
        digits = all(name.isdigit() for name in group.children)
        return nn.ModuleList if digits else nn.Module


@cache
def _copies(group_class: ModuleFactory) -> Copies:
    """The copying factory of a group's class (classes are shared by every network that makes the same group)."""
    return Copies(group_class)


def _prefixes(node: str) -> list[str]:
    """`layer1.0.conv1` -> [`layer1`, `layer1.0`]: the groups a node is in, outermost first."""
    parts = node.split(".")
    return [".".join(parts[:depth]) for depth in range(1, len(parts))]


def _submodule(path: str, make: ModuleFactory) -> Submodule:
    parent, _, name = path.rpartition(".")
    return Submodule(path, parent, name, make)


def _needed(graph: IRGraph, outputs: list[tuple[str, str]]) -> set[str]:
    """The outputs' nodes and every node they depend on."""
    needed: set[str] = set()
    stack = [node for _, node in outputs]
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(graph.pred[node])
    return needed


@dataclass(frozen=True)
class _Source:
    """A forward's Python source and the globals it needs, from fx's code generator."""

    text: str
    globals: tuple[tuple[str, Any], ...]
    graph: fx.Graph = field(compare=False)


def _source(graph: fx.Graph) -> _Source:
    python = graph.python_code(root_module="self")
    return _Source(python.src, tuple(sorted(python.globals.items(), key=lambda kv: kv[0])), graph)


def _compile_forward(source: _Source, label: str) -> Callable[..., Any]:
    filename = f"<resdsl {label} {next(_generated)}>"
    linecache.cache[filename] = (len(source.text), None, source.text.splitlines(keepends=True), filename)
    namespace = dict(source.globals)
    exec(compile(source.text, filename, "exec"), namespace)
    return namespace["forward"]


_FORWARD_CLASSES: dict[tuple[str, str], type[GeneratedModule]] = {}


def _forward_class(name: str, source: _Source) -> type[GeneratedModule]:
    """One class per name and forward source: every block of a definition and shortcut case shares it."""
    key = (name, source.text)
    cls = _FORWARD_CLASSES.get(key)
    if cls is None:
        attributes = {"forward": _compile_forward(source, name), "graph": source.graph, "code": source.text,
                      "__module__": __name__}
        cls = _FORWARD_CLASSES[key] = type(name, (GeneratedModule,), attributes)
    return cls


@cache
def _sequential_class(name: str) -> type[GeneratedSequential]:
    return type(name, (GeneratedSequential,), {"__module__": __name__})


def _fx_name(path: str) -> str:
    """The name of a value in generated code: the path with `_` for `.`; never `self`, the forward's module."""
    name = path.replace(".", "_") or "x"
    return f"{name}_" if name == "self" else name


def module_class(network: Network) -> type[NetworkModule]:
    """Generate the network's class: its tree of submodules and its forward, compiled once."""
    lowering = _Lowering(network)
    source = _source(lowering.forward_graph(lowering.root))
    attributes = {"forward": _compile_forward(source, network.name), "graph": source.graph, "code": source.text,
                  "_layout": tuple(lowering.layout()), "_residual_ends": tuple(_residual_ends(network.graph)),
                  "__module__": __name__}
    return type(lowering.root.name, (NetworkModule,), attributes)


class UnknownFeature(ValueError):
    """A feature name that is not a layer or a group of layers with one output."""


def feature_class(network: Network, names: tuple[str, ...]) -> type[NetworkModule]:
    """A class whose forward returns the outputs of `names` (layers or groups) as a dict, in that order.

    Groups around a requested layer are run layer by layer; layers no feature needs are left out, modules
    and all, as torchvision's feature extractors do. Those are built and initialised first, then removed, so that
    the weights kept are those of the whole network with the same seed (the classifier's draws come before the
    convs' in torchvision's order).
    """
    if not names:
        raise UnknownFeature("give at least one feature name")
    probe = _Lowering(network)
    outputs = [(name, _feature_node(probe, name)) for name in names]
    nodes = {node for _, node in outputs}
    lowering = _Lowering(network, escaping=frozenset(nodes))
    inline = frozenset(path for path in lowering.groups if path and any(n.startswith(f"{path}.") for n in names))
    graph = lowering.forward_graph(lowering.root, outputs, inline)
    source = _source(graph)
    targets = {n.target for n in graph.nodes if n.op == "call_module"}
    strides = _strides(network.graph)
    shapes = [network.graph.known_shape(node) for _, node in outputs]
    info = tuple(FeatureInfo(name, shape[0], strides[node] if len(shape) == 3 else 0)
                 for (name, node), shape in zip(outputs, shapes, strict=True))
    layout = lowering.layout()
    kept = {submodule.path for submodule in lowering.layout(targets)}
    attributes = {"forward": _compile_forward(source, f"{network.name} features"), "graph": graph,
                  "code": source.text, "_layout": tuple(layout),
                  "_left_out": tuple(submodule for submodule in layout if submodule.path not in kept),
                  "_residual_ends": tuple(_residual_ends(network.graph)), "feature_info": info,
                  "__module__": __name__}
    return type(f"{lowering.root.name}Features", (NetworkModule,), attributes)


def _strides(graph: IRGraph) -> dict[str, int]:
    """Each node's stride over the input's rows, the product of the strides before it: timm's `reduction`, which
    input height // output height is not where the sizes do not divide (100 px: 7, not 8, after three /2)."""
    strides: dict[str, int] = {}
    for node in graph:  # in topological order
        stride = (graph.nodes[node].args or {}).get("stride") or 1
        strides[node] = max((strides[p] for p in graph.pred[node]), default=1) * (
            stride[0] if isinstance(stride, tuple) else stride)
    return strides


def _feature_node(lowering: _Lowering, name: str) -> str:
    graph = lowering.graph
    if name in graph and not graph.nodes[name].op.internal:
        return name
    group = lowering.groups.get(name)
    if group is not None and name:
        if group.exit is None:
            raise UnknownFeature(f"'{name}' has several outputs; name one of the layers under it")
        return group.exit
    from difflib import get_close_matches

    known = [n for n, node in graph.nodes.items() if not node.op.internal] + [p for p in lowering.groups if p]
    close = get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownFeature(f"'{name}' is not a layer or group of {network_name(lowering)}{hint}")


def network_name(lowering: _Lowering) -> str:
    return lowering.network.name


def _residual_ends(graph: IRGraph) -> list[str]:
    """The layers that end the residual branch (input 0) of each `add shortcut`, through ops that keep zeros
    zero (an SE gate's product included): a norm, or a bias-free conv (pre-activation units, as timm's)."""
    ends = []
    for node in graph:
        if not graph.nodes[node].residual:
            continue
        stack, seen = [inputs(graph, node)[0]], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            op, args = graph.nodes[current].op, graph.nodes[current].args or {}
            if op.ends_branch and not args.get("bias"):
                ends.append(current)
            elif op.keeps_zero:
                stack += inputs(graph, current)
    return ends


def _class_name(name: str) -> str:
    """`wide_resnet50_2` -> `WideResnet50_2`: a spec's name as a Python class name."""
    joined = ""
    for part in filter(None, re.split(r"[^0-9A-Za-z]+", name)):
        joined += f"_{part}" if part[0].isdigit() and joined else part[0].upper() + part[1:]
    return joined if joined.isidentifier() else f"Net{joined}"
