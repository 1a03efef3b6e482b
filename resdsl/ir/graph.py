"""The graph IR: a directed graph of primitive ops, and the builder that adds nodes to it.

`IRGraph` is the one graph type: the compiler fills it, the passes, diagrams and backends read it, and
`to_networkx` exports it for graph algorithms (networkx is imported only there).

Node ids are dotted module paths (`layer2.0.conv1`); each maps to a `Node` (its op, arguments, shape, where it
came from) in `IRGraph.nodes`. `pred[node]` and `succ[node]` map the node's inputs and readers to the edge's
index, the position of the source among the target's inputs (for `add`, 0 is the residual branch and 1 the
shortcut).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from resdsl.ir.names import check_path
from resdsl.ir.ops import OPS, Args, Conv, Linear, Op, Shape, ShapeError
from resdsl.limits import MAX_NODES, MAX_WEIGHTED_LAYERS
from resdsl.source import Span

if TYPE_CHECKING:
    import networkx as nx

Section = Literal["stem", "stage", "head", "io"]
Branch = Literal["main", "shortcut"]


@dataclass(frozen=True)
class Scope:
    """Where a node came from: `stage` is the stage name (`stem`/`head` outside stages)."""

    section: Section
    stage: str
    block: int | None = None
    branch: Branch = "main"
    block_type: str | None = None
    shortcut: str | None = None
    block_name: str | None = None  # the block's name in its stage: `0`, or from the stage's pattern (`b1`)


@dataclass(frozen=True)
class Site:
    """Where emitted layers go: the node-id prefix, their scope, and the stage line that instantiated them."""

    prefix: str
    scope: Scope
    origin: Span | None = None

    def under(self, label: str, scope: Scope | None = None) -> Site:
        return Site(f"{self.prefix}{label}.", scope or self.scope, self.origin)


@dataclass(slots=True)
class Meta:
    """Facts a pass adds to a node: its cost, set by resdsl.passes.count."""

    params: int = 0  # weights, as PyTorch counts them
    macs: int = 0  # multiply-accumulates (conv, linear)


@dataclass(slots=True)
class Node:
    """One op of the IR, as built."""

    op: Op  # an instance from resdsl.ir.ops.OPS; `str(op)` is its name
    args: Args | None  # its bound arguments (None if they could not be bound)
    scope: Scope
    span: Span  # where it is written
    origin: Span | None = None  # the stage line or block call that instantiated it (None when written in place)
    shape: Shape | None = None  # the inferred output shape, batch excluded (None if unknown)
    error: str | None = None  # the message of its failed check
    residual: bool = False  # the `add` of `add shortcut`
    placeholder: bool = False  # stands for a layer, block or stage that could not be built
    meta: Meta = field(default_factory=Meta)


@dataclass(slots=True)
class IRGraph:
    """The IR: nodes in the order added (a topological order), the edges between them, and the network's facts."""

    name: str
    input_shape: Shape | None = None
    output: str | None = None  # the node feeding `output`
    stages: list[str] = field(default_factory=list)  # the stages' names, in order
    calls: dict[str, str] = field(default_factory=dict)  # the label of a block called from a body -> the block
    nodes: dict[str, Node] = field(default_factory=dict)
    pred: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> {input: index}
    succ: dict[str, dict[str, int]] = field(default_factory=dict)  # node -> {reader: index}

    def add_node(self, name: str, node: Node) -> None:
        self.nodes[name] = node
        self.pred[name], self.succ[name] = {}, {}

    def add_edge(self, source: str, target: str, index: int) -> None:
        self.succ[source][target] = self.pred[target][source] = index

    def known_shape(self, name: str) -> Shape:
        """The node's shape, which every node of a checked network has (ValueError for one not inferred)."""
        shape = self.nodes[name].shape
        if shape is None:
            raise ValueError(f"the shape of '{name}' is not known: its network failed its checks")
        return shape

    def edges(self) -> Iterator[tuple[str, str, int]]:
        """(source, target, index) for every edge, by source in node order."""
        for source, targets in self.succ.items():
            for target, index in targets.items():
                yield source, target, index

    def __contains__(self, node: object) -> bool:
        return node in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def to_networkx(self) -> nx.DiGraph:
        """The same graph as a networkx.DiGraph: nodes in the same order with their fields (and `meta`'s) as
        attributes, edges with their `index`, the network's facts as graph attributes."""
        import networkx as nx

        graph = nx.DiGraph(name=self.name, input_shape=self.input_shape, output=self.output,
                           stages=list(self.stages), calls=dict(self.calls))
        graph.add_nodes_from((name, _attributes(node)) for name, node in self.nodes.items())
        graph.add_edges_from((source, target, {"index": index}) for source, target, index in self.edges())
        return graph


def _attributes(node: Node) -> dict[str, object]:
    attributes = {f.name: getattr(node, f.name) for f in fields(node) if f.name != "meta"}
    return attributes | {f.name: getattr(node.meta, f.name) for f in fields(node.meta)}


def inputs(graph: IRGraph, node: str) -> list[str]:
    """The node's inputs, in argument order."""
    preds = graph.pred[node]
    if len(preds) < 2:
        return list(preds)
    return sorted(preds, key=preds.__getitem__)


# the ids of the nodes the compiler adds, named after their ops, which no label may take
COMPILER_NODES = tuple(name for name, op in OPS.items() if op.internal)


class TooLarge(Exception):
    """The graph would pass a size limit: the message says which and what to change, `span` where."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.span = span


class GraphBuilder:
    """Adds nodes to the IR: unique ids, paths that can become module attributes, limits, shapes on the way."""

    def __init__(self, name: str, on_error: Callable[[str, Span, Span | None, str], None]) -> None:
        self.graph = IRGraph(name)
        self.on_error = on_error  # (node, span, origin, message)
        self._containers: set[str] = set()
        self._stages: set[str] = set()  # the stages' names and the groups they are in (`stages` of `stages.0`)
        self._counters: dict[str, int] = {}
        self.weighted = 0  # conv and linear layers so far

    def reserve_stages(self, names: list[str]) -> None:
        """Keep the stages' names for them, so that no layer before them (unlabelled or not) takes one."""
        for name in names:
            if check_path(name, "stage"):
                continue  # refused at its stage line
            while name and name not in self._stages:
                self._stages.add(name)
                name = name.rpartition(".")[0]

    def has(self, node: str) -> bool:
        return node in self.graph or node in self._containers or node in self._stages

    def fresh_id(self, prefix: str, base: str) -> str:
        """`prefix + base`, or with `_1`, `_2`, ... after it if taken (constant time per name)."""
        node = prefix + base
        if not self.has(node):
            return node
        count = self._counters.get(node, 0)
        while True:
            count += 1
            candidate = f"{node}_{count}"
            if not self.has(candidate):
                self._counters[node] = count
                return candidate

    def path_problem(self, node: str, stage: str | None = None) -> str | None:
        """Why `node` cannot be added as a module path, or None; `stage` is the stage being emitted, if any."""
        problem = check_path(node)
        if problem:
            return problem
        root = node.partition(".")[0]
        if root in COMPILER_NODES:
            return f"'{root}' names the network's {root}, which the compiler adds; a layer cannot take it"
        if node in self.graph:
            return f"layer name '{node}' is used twice"
        if node in self._stages:
            return f"'{node}' is the name of a stage; a layer cannot take it"
        if node in self._containers:
            return f"'{node}' names both a layer and a group of layers under it ('{node}.…')"
        prefix, layers = node, self.graph.nodes  # the dict itself: this loop runs once per part of a deep path
        while "." in prefix:
            prefix = prefix.rpartition(".")[0]
            if prefix in layers:
                return f"'{node}' would put a layer inside the layer '{prefix}'"
            if prefix in self._stages and not (stage == prefix or (stage or "").startswith(f"{prefix}.")):
                return f"'{node}' would put a layer inside the stage '{prefix}', mixing their modules; rename it"
        return None

    def add(self, node: str, op: Op, args: Args | None, sources: list[str], scope: Scope, span: Span,
            origin: Span | None = None, quiet: bool = False) -> str:
        """Add a node (its id checked by the caller), infer its shape, and return its id.

        `quiet`: a shape error is left to the caller to report (with a message that knows more).
        """
        if len(self.graph) >= MAX_NODES:
            raise TooLarge(too_many_layers(), origin or span)
        if isinstance(op, Conv | Linear):
            self.weighted += 1
            if self.weighted > MAX_WEIGHTED_LAYERS:
                raise TooLarge(too_many_weighted(), origin or span)
        self.graph.add_node(node, Node(op, args, scope, span, origin))
        for index, source in enumerate(sources):
            self.graph.add_edge(source, node, index)
        group = node
        while "." in group:  # each group once: a group's groups are known once it is
            group = group.rpartition(".")[0]
            if group in self._containers:
                break
            self._containers.add(group)
        self.infer(node, quiet, sources)
        return node

    def infer(self, name: str, quiet: bool = False, sources: list[str] | None = None) -> Shape | None:
        """Infer and store one node's shape by its op's rule; None when an input or the arguments are unknown,
        or the op cannot take its inputs (a failed check, reported unless `quiet`). `sources` are the node's
        inputs in order, if the caller knows them."""
        graph = self.graph
        node = graph.nodes[name]
        shapes = [graph.nodes[p].shape for p in (inputs(graph, name) if sources is None else sources)]
        known = [shape for shape in shapes if shape is not None]
        if node.args is None or len(known) < len(shapes):
            return None
        try:
            node.shape = node.op.infer(node.args, known)
        except ShapeError as error:
            if not quiet:
                node.error = str(error)
                self.on_error(name, node.span, node.origin, str(error))
        return node.shape

    def placeholder(self, prefix: str, current: str, scope: Scope, span: Span) -> str:
        """A node of unknown shape standing for what could not be built, so later checks skip what depends on it."""
        node = self.add(self.fresh_id(prefix, "unknown"), OPS["identity"], None, [current], scope, span)
        self.graph.nodes[node].placeholder = True
        return node



def too_many_layers(count: int | None = None) -> str:
    """The refusal of a graph over MAX_NODES: `count` is the total a stage would bring, if known."""
    where = f"this stage brings the network to {count:,} layers, over" if count else "the network passes here"
    return f"{where} the limit of {MAX_NODES:,} layers for one network; use fewer or smaller blocks"


def too_many_weighted(count: int | None = None) -> str:
    """The refusal of a graph over MAX_WEIGHTED_LAYERS: `count` is the total a stage would bring, if known."""
    where = (f"this stage brings the network to {count:,} conv and linear layers, over" if count
             else "the network passes here")
    return (f"{where} the limit of {MAX_WEIGHTED_LAYERS:,} conv and linear layers for one network; use fewer "
            "or smaller blocks")
