"""Shape inference: apply each op's rule (resdsl.ir.ops) to its input shapes."""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from resdsl.ir.graph import inputs
from resdsl.ir.ops import OPS, Shape, ShapeError

OnError = Callable[[str, str], None]


def infer_node(graph: nx.DiGraph, node: str, on_error: OnError) -> Shape | None:
    """Infer and store one node's shape; None (silently) when an input is already unknown."""
    attrs = graph.nodes[node]
    shapes = [graph.nodes[p]["shape"] for p in inputs(graph, node)]
    shape: Shape | None = None
    if attrs["args"] is not None and all(s is not None for s in shapes):
        try:
            shape = OPS[attrs["op"]].infer(attrs["args"], shapes)
        except ShapeError as error:
            on_error(node, str(error))
    attrs["shape"] = shape
    return shape


def infer_shapes(graph: nx.DiGraph, on_error: OnError) -> None:
    """Infer every node's shape in topological order (e.g. after editing the graph)."""
    for node in nx.topological_sort(graph):
        infer_node(graph, node, on_error)
