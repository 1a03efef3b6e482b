"""The graph IR: a networkx.DiGraph of primitive ops, one node per op.

Node id: the dotted module path (`layer2.0.conv1`). Node attributes:
  op      name of the op in `resdsl.ir.ops.OPS`
  args    the op's bound arguments (dict)
  shape   inferred output shape, batch excluded, or None where inference failed
  params, macs   filled by `resdsl.passes.count`
  scope   `Scope`: section, stage, block index, branch
  span    where the op is written; `origin`: the stage line that instantiated it
  error   (only on a node that failed its check) the diagnostic message
Edge attribute `index` orders an op's inputs (for `add`: 0 residual branch, 1 shortcut).
Graph attributes: name, input_shape, output (the node feeding `output`), stages (names in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import networkx as nx

from resdsl.ir.ops import Shape

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


def inputs(graph: nx.DiGraph, node: str) -> list[str]:
    """The node's inputs, in argument order."""
    preds = graph.pred[node]
    if len(preds) < 2:
        return list(preds)
    return sorted(preds, key=lambda p: preds[p]["index"])


def shape_of(graph: nx.DiGraph, node: str) -> Shape | None:
    return graph.nodes[node]["shape"]
