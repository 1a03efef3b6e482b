"""Complexity: params (as PyTorch counts them), MACs of conv and linear layers (the paper's Table 1
convention), and activation memory, per node and per stage."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from resdsl.ir.graph import IRGraph, inputs

if TYPE_CHECKING:
    import networkx as nx

BYTES_PER_ELEMENT = 4  # fp32


@dataclass(frozen=True)
class StageSummary:
    """One row of the Table-1 view: a stage (or the stem, or the head)."""

    name: str
    blocks: int
    block: str | None
    shortcut: str | None
    output: list[int]
    params: int
    macs: int
    activation_bytes: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int
    activation_bytes: int
    stages: list[StageSummary]


def count(graph: IRGraph | nx.DiGraph) -> Counts:
    """Store `params` and `macs` on every node and sum them per stage (nodes in the order built, a topological one)."""
    totals: dict[tuple[str, str], dict] = {}
    nodes = graph.nodes
    for node in graph:
        attrs = nodes[node]
        scope = attrs["scope"]
        shape = attrs["shape"]
        shapes = [nodes[p]["shape"] for p in inputs(graph, node)]
        op = attrs["op"]
        known = shape is not None and attrs["args"] is not None and None not in shapes
        attrs["params"] = op.params(attrs["args"], shapes, shape) if known else 0
        attrs["macs"] = op.macs(attrs["args"], shapes, shape) if known else 0
        if scope.section == "io":
            continue
        row = totals.get((scope.section, scope.stage))  # a stage named `head` is not the head
        if row is None:
            row = totals[scope.section, scope.stage] = {"name": scope.stage, "blocks": set(), "block": scope.block_type,
                                         "shortcut": scope.shortcut, "output": [], "params": 0, "macs": 0,
                                         "activation_bytes": 0}
        row["params"] += attrs["params"]
        row["macs"] += attrs["macs"]
        row["activation_bytes"] += BYTES_PER_ELEMENT * math.prod(shape) if shape else 0
        if scope.branch == "main" and shape is not None:
            row["output"] = list(shape)
        if scope.block is not None:
            row["blocks"].add(scope.block)
    stages = [StageSummary(**(row | {"blocks": len(row["blocks"])})) for row in totals.values()]
    return Counts(params=sum(r.params for r in stages), macs=sum(r.macs for r in stages),
                  activation_bytes=sum(r.activation_bytes for r in stages), stages=stages)
