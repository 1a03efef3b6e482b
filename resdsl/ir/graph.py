"""The graph IR: a directed graph of primitive ops, and the builder that adds nodes to it.

`Network.graph` is a `networkx.DiGraph`; it is built from the `IRGraph` the compiler fills, which offers
the few DiGraph members compiling needs, so that checking a spec does not pay networkx's import (~0.2 s).

Node ids are dotted module paths (`layer2.0.conv1`). Node attributes:
  op       the op (an instance from resdsl.ir.ops.OPS; `str(op)` is its name)
  args     its bound arguments (None if they could not be bound)
  shape    the inferred output shape, batch excluded (None if unknown)
  params   weights, as PyTorch counts them; macs: multiply-accumulates (conv, linear) — set by `count`
  scope    where it came from: Scope(section, stage, block, branch, block_type, shortcut, block_name)
  span     where it is written; origin: the stage line that instantiated it (None outside stages)
  error    the message of a failed check (only on nodes that failed)
  residual True on the `add` of `add shortcut` (only there)
Edges carry `index`, the position of the source among the target's inputs (for `add`, 0 is the
residual branch and 1 the shortcut). Graph attributes: name, input_shape, output (the node
feeding `output`), stages (names in order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


class IRGraph:
    """The IR as the compiler builds it: nodes in the order added (a topological order), attribute dicts,
    and the `graph`, `nodes`, `pred`, `succ`, `add_node`, `add_edge` members of a networkx DiGraph."""

    def __init__(self, **attrs: object) -> None:
        self.graph: dict[str, object] = dict(attrs)
        self.nodes: dict[str, dict] = {}
        self.pred: dict[str, dict[str, dict]] = {}
        self.succ: dict[str, dict[str, dict]] = {}

    def add_node(self, node: str, **attrs: object) -> None:
        self.nodes[node] = attrs
        self.pred[node], self.succ[node] = {}, {}

    def add_edge(self, source: str, target: str, **attrs: object) -> None:
        self.succ[source][target] = self.pred[target][source] = attrs

    def __contains__(self, node: object) -> bool:
        return node in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def to_networkx(self) -> nx.DiGraph:
        """The same graph as a networkx.DiGraph (nodes in the same order)."""
        import networkx as nx

        graph = nx.DiGraph(**self.graph)
        graph.add_nodes_from(self.nodes.items())
        graph.add_edges_from((source, target, attrs) for target, sources in self.pred.items()
                             for source, attrs in sources.items())
        return graph


def inputs(graph: IRGraph | nx.DiGraph, node: str) -> list[str]:
    """The node's inputs, in argument order."""
    preds = graph.pred[node]
    if len(preds) < 2:
        return list(preds)
    return sorted(preds, key=lambda p: preds[p]["index"])


def shape_of(graph: IRGraph | nx.DiGraph, node: str) -> Shape | None:
    return graph.nodes[node]["shape"]


def infer_node(graph: IRGraph | nx.DiGraph, node: str, sources: list[str] | None = None) -> Shape | None:
    """Infer and store one node's shape by its op's rule; None when an input or the arguments are unknown.

    `sources` are the node's inputs in order, if the caller knows them. Raises ShapeError (the shape is
    stored as None first) when the op cannot take its inputs.
    """
    attrs = graph.nodes[node]
    shapes = [graph.nodes[p]["shape"] for p in (inputs(graph, node) if sources is None else sources)]
    attrs["shape"] = None
    if attrs["args"] is not None and None not in shapes:
        attrs["shape"] = attrs["op"].infer(attrs["args"], shapes)
    return attrs["shape"]


COMPILER_NODES = ("input", "output")  # the ids of the nodes the compiler adds, which no label may take


class TooLarge(Exception):
    """The graph would pass a size limit: the message says which and what to change, `span` where."""

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.span = span


class GraphBuilder:
    """Adds nodes to the IR: unique ids, paths that can become module attributes, limits, shapes on the way."""

    def __init__(self, name: str, on_error: Callable[[str, Span, Span | None, str], None]) -> None:
        self.graph = IRGraph(name=name, stages=[])
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
        prefix = node
        while "." in prefix:
            prefix = prefix.rpartition(".")[0]
            if prefix in self.graph:
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
        self.graph.add_node(node, op=op, args=args, shape=None, scope=scope, span=span, origin=origin)
        for index, source in enumerate(sources):
            self.graph.add_edge(source, node, index=index)
        group = node
        while "." in group:  # each group once: a group's groups are known once it is
            group = group.rpartition(".")[0]
            if group in self._containers:
                break
            self._containers.add(group)
        self.infer(node, quiet, sources)
        return node

    def infer(self, node: str, quiet: bool = False, sources: list[str] | None = None) -> Shape | None:
        """Infer and store one node's shape; a failed check is reported unless `quiet`."""
        try:
            return infer_node(self.graph, node, sources)
        except ShapeError as error:
            if not quiet:
                attrs = self.graph.nodes[node]
                attrs["error"] = str(error)
                self.on_error(node, attrs["span"], attrs["origin"], str(error))
            return None

    def placeholder(self, prefix: str, current: str, scope: Scope, span: Span) -> str:
        """A node of unknown shape standing for what could not be built, so later checks skip what depends on it."""
        return self.add(self.fresh_id(prefix, "unknown"), OPS["identity"], None, [current], scope, span)



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
