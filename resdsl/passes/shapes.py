"""Shape inference over a whole graph, e.g. after editing it: each op's rule applied in topological order."""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from resdsl.ir.graph import infer_node
from resdsl.ir.ops import ShapeError

OnError = Callable[[str, str], None]


def infer_shapes(graph: nx.DiGraph, on_error: OnError) -> None:
    """Infer every node's shape; `on_error(node, message)` for each op that cannot take its inputs."""
    for node in nx.topological_sort(graph):
        try:
            infer_node(graph, node)
        except ShapeError as error:
            graph.nodes[node]["error"] = str(error)
            on_error(node, str(error))
