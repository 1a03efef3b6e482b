"""Diagrams of the graph IR with Graphviz: the stage chain of the paper's Table 1, the blocks of
its Figures 2 and 3, or every op. Nodes that failed their check are red, with the diagnostic."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import graphviz

from resdsl.ir.graph import IRGraph, inputs
from resdsl.ir.ops import Args, Op, Shape
from resdsl.passes.count import count
from resdsl.source import printable

Level = Literal["stage", "block", "op"]
LEVELS: tuple[Level, ...] = ("stage", "block", "op")
FORMATS = ("svg", "png", "pdf", "dot")
DOT_TIMEOUT_SECONDS = 120  # a layout that takes longer is not one a person will read
PNG_DPI = 144  # sharp enough for a README; Graphviz's default of 96 blurs the small labels
INSTALL_HINT = ("Graphviz's `dot` program is not installed, so only .dot output can be written; "
                "install Graphviz (`apt-get install graphviz` or `brew install graphviz`)")

_STAGE_FILLS = ("#dbe9f6", "#e2f0d9", "#fce4d6", "#ede1f5", "#fff2cc", "#d9f2f2")
_PLAIN_FILL = "#f2f2f2"
_ERROR = {"color": "red", "fontcolor": "red", "penwidth": "2", "fillcolor": "#ffe6e6"}
_UNCHECKED = {"color": "gray55", "fontcolor": "gray45", "fillcolor": "white"}


class RenderError(Exception):
    """The diagram cannot be rendered in the asked format (e.g. Graphviz is missing)."""


def draw(graph: IRGraph, level: Level = "block", expand: bool = False) -> graphviz.Digraph:
    """The diagram of `graph` at `level`; `expand` draws every block instead of "×N" runs."""
    if level == "stage":
        return _stage_view(graph)
    if level == "block":
        return _block_view(graph, expand)
    if level == "op":
        return _op_view(graph)
    raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")


def render(diagram: graphviz.Digraph, fmt: str) -> bytes:
    """The diagram as `fmt` (svg, png, pdf, dot); only dot needs no Graphviz install."""
    if fmt == "dot":
        return diagram.source.encode()
    if fmt not in FORMATS:
        raise RenderError(f"cannot draw {fmt!r} files; use one of {', '.join(FORMATS)}")
    if shutil.which("dot") is None:
        raise RenderError(INSTALL_HINT)
    if fmt == "png":
        diagram = diagram.copy()
        diagram.attr(dpi=str(PNG_DPI))
    return _run_dot(diagram.source, fmt)


def _run_dot(source: str, fmt: str) -> bytes:
    """Graphviz's `dot` on `source`; its failures (and its chatter on stderr) become one RenderError sentence."""
    try:
        done = subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True,
                              timeout=DOT_TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise RenderError(INSTALL_HINT) from None
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz took more than {DOT_TIMEOUT_SECONDS} s to lay out the diagram and was "
                          "stopped; draw fewer nodes (--level stage or block)") from None
    if done.returncode < 0:
        raise RenderError(f"Graphviz's dot was killed by signal {-done.returncode} while drawing the diagram "
                          "(too large for it?); draw fewer nodes (--level stage or block), or write .dot")
    if done.returncode or not done.stdout:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        detail = printable(lines[-1][:200]) if lines else f"exit status {done.returncode}"
        raise RenderError(f"Graphviz could not draw the diagram ({detail}); write .dot to see what it was given")
    return done.stdout


# --- labels ---------------------------------------------------------------------------------

def shape_text(shape: Shape | None) -> str:
    return "?" if shape is None else "×".join(str(d) for d in shape)


def layer_text(op: Op, args: Args | None) -> str:
    """An op in the paper's words: "3×3 conv, 64, /2", "3×3 max pool, /2", "fc 1000"."""
    return op.name if args is None else op.label(args)


def op_text(op: Op, args: Args | None) -> str:
    """An op with its arguments as written in a spec, defaults left out: "conv 3x3, 64, stride 2"."""
    return f"{op.name} (arguments not known)" if args is None else op.text(args)


def _stride(args: Args | None) -> int:
    value = (args or {}).get("stride") or 1
    return max(value) if isinstance(value, tuple) else value


def _wrap(message: str) -> str:
    return "\n".join(textwrap.wrap(message, 44, break_on_hyphens=False))


def _si(value: int, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{prefix} {unit}"
    return f"{value} {unit}"


# --- structure --------------------------------------------------------------------------------

@dataclass
class _Unit:
    """The nodes of the stem, the head, one block, or (at stage level) one stage."""

    key: tuple[str, str, int | None]
    nodes: list[str]

    @property
    def section(self) -> str:
        return self.key[0]

    @property
    def stage(self) -> str:
        return self.key[1]


def _units(graph: IRGraph, by_block: bool) -> list[_Unit]:
    """The graph's nodes grouped by stage (and block), in the order they were built."""
    units: dict[tuple[str, str, int | None], _Unit] = {}
    for node, layer in graph.nodes.items():
        scope = layer.scope
        key = (scope.section, scope.stage, scope.block if by_block else None)
        units.setdefault(key, _Unit(key, [])).nodes.append(node)
    return list(units.values())


def error_of(graph: IRGraph, node: str) -> str | None:
    """Why the node failed: its check's message, or a pointer to the diagnostics for a node the front
    end could not build (bad arguments, unknown op or block) on an input of known shape."""
    layer = graph.nodes[node]
    if layer.error:
        return layer.error
    if layer.args is None:
        sources = inputs(graph, node)
        if sources and graph.nodes[sources[0]].shape is not None:
            return "see the diagnostics"
    return None


def _not_built(node: str) -> str:
    """The label of a placeholder: `layer1 not built` for a stage or block that could not be built."""
    where = node.rpartition(".")[0]
    return f"{where} not built" if where else "not built"


def _status(graph: IRGraph, node: str) -> dict[str, str]:
    """Red for a node that failed its check, grey for one whose shape could not be inferred."""
    if error_of(graph, node):
        return dict(_ERROR)
    return dict(_UNCHECKED) if graph.nodes[node].shape is None else {}


def _fills(graph: IRGraph) -> dict[str, str]:
    stages = graph.stages
    return {name: _STAGE_FILLS[i % len(_STAGE_FILLS)] for i, name in enumerate(stages)}


def _block_of(graph: IRGraph, node: str) -> tuple[str, str, int | None]:
    scope = graph.nodes[node].scope
    return scope.section, scope.stage, scope.block


def _exit(graph: IRGraph, unit: _Unit) -> str:
    """The node whose output leaves the unit (its last main-branch node)."""
    return [n for n in unit.nodes if graph.nodes[n].scope.branch == "main"][-1]


def _subgraph(diagram: graphviz.Digraph, name: str) -> AbstractContextManager[graphviz.Digraph]:
    """`diagram.subgraph(name=name)`, the context that adds a cluster (graphviz's return type also allows None)."""
    context = diagram.subgraph(name=name)
    assert context is not None  # None only when a graph is passed in
    return context


def _digraph(graph: IRGraph, level: str) -> graphviz.Digraph:
    name = graph.name
    diagram = graphviz.Digraph(name=f"{name}_{level}", comment=f"resdsl viz --level {level}")
    diagram.attr(rankdir="TB", fontname="Helvetica", fontsize="11", labelloc="t", label=name,
                 ranksep="0.22", nodesep="0.35")
    diagram.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica",
                 fontsize="10", margin="0.12,0.04", height="0.3")
    diagram.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.6", fontcolor="gray30")
    return diagram


# --- stage level --------------------------------------------------------------------------------

def _stage_view(graph: IRGraph) -> graphviz.Digraph:
    diagram = _digraph(graph, "stage")
    rows = {row.name: row for row in count(graph).stages}
    fills = _fills(graph)
    units = _units(graph, by_block=False)
    for unit in units:
        attrs = _status_of_unit(graph, unit)
        if unit.section == "io":
            diagram.node(unit.stage, unit.stage, **({"shape": "ellipse", "style": "filled"} | attrs))
            continue
        lines = [unit.stage]
        if unit.section == "stage":
            lines += _stage_lines(graph, unit)
        else:
            lines += _repeats([layer_text(graph.nodes[n].op, graph.nodes[n].args) for n in unit.nodes
                               if not graph.nodes[n].op.implied])
        row = rows.get(unit.stage)
        if row is not None and row.params + row.macs:
            lines.append(f"{_si(row.params, 'params')} · {_si(row.macs, 'MACs')}")
        lines += [_wrap(f"{n}: {error_of(graph, n)}") for n in unit.nodes if error_of(graph, n)]
        fill = fills.get(unit.stage, _PLAIN_FILL)
        diagram.node(unit.stage, "\n".join(lines), **({"fillcolor": fill} | attrs))
    for before, after in itertools.pairwise(units):
        source = _exit(graph, before)
        diagram.edge(before.stage, after.stage, label=f" {shape_text(graph.nodes[source].shape)}")
    return diagram


def _status_of_unit(graph: IRGraph, unit: _Unit) -> dict[str, str]:
    if any(error_of(graph, n) for n in unit.nodes):
        return dict(_ERROR)
    return _status(graph, _exit(graph, unit))


def _stage_lines(graph: IRGraph, unit: _Unit) -> list[str]:
    """Block type and shortcut, then Table 1's "[3×3, 64; 3×3, 64] ×3" from the stage's first block."""
    scopes = [graph.nodes[n].scope for n in unit.nodes]
    blocks = sorted({s.block for s in scopes if s.block is not None})
    first = [n for n, s in zip(unit.nodes, scopes, strict=True) if s.block == (blocks[0] if blocks else None)]
    kinds = f"{scopes[0].block_type or 'layers'}, shortcut {scopes[0].shortcut or 'none'}"
    widths = "; ".join(_block_layers(graph, first))
    stride = max((_stride(graph.nodes[n].args) for n in first), default=1)
    table = f"[{widths}] ×{len(blocks)}" if widths else f"×{len(blocks)}"
    return [kinds, table + (f", /{stride}" if stride > 1 else "")]


def _block_layers(graph: IRGraph, nodes: list[str]) -> list[str]:
    """A block's convs as Table 1 lists them ("3×3, 64"), a block it calls by its name ("se"), as the SE paper's
    Table 1 adds its gate to the bottleneck."""
    calls = graph.calls
    items: list[str] = []
    named: set[str] = set()
    for node in nodes:
        layer = graph.nodes[node]
        if layer.scope.branch != "main":
            continue
        chain = _calls_of(node, calls)
        if chain:
            if chain[0] not in named:
                named.add(chain[0])
                items.append(calls[chain[0]])
        elif layer.args is not None and (entry := layer.op.table_entry(layer.args)) is not None:
            items.append(entry)
    return items


def _calls_of(node: str, calls: dict[str, str]) -> list[str]:
    """The block calls `node` was emitted under, outermost first (`layer1.0.se` for `layer1.0.se.fc1`)."""
    parts = node.split(".")
    return [prefix for prefix in (".".join(parts[:i]) for i in range(1, len(parts))) if prefix in calls]


def _repeats(lines: list[str]) -> list[str]:
    """Consecutive equal lines as one line with "×N"."""
    out: list[str] = []
    counts: list[int] = []
    for line in lines:
        if out and out[-1] == line:
            counts[-1] += 1
        else:
            out.append(line)
            counts.append(1)
    return [line if n == 1 else f"{line} ×{n}" for line, n in zip(out, counts, strict=True)]


# --- block level ---------------------------------------------------------------------------------

@dataclass
class _Run:
    """Consecutive identical blocks of a stage, drawn once (or one block, or the stem/head)."""

    unit: _Unit
    members: list[_Unit]


def _signature(graph: IRGraph, unit: _Unit) -> tuple:
    """What makes two blocks the same: their ops, arguments and shapes, branch by branch."""
    def frozen(args: Args | None) -> tuple | None:
        return None if args is None else tuple(sorted(args.items()))

    return tuple((a.scope.branch, a.op, frozen(a.args), a.shape, error_of(graph, n))
                 for n, a in ((n, graph.nodes[n]) for n in unit.nodes))


def _runs(graph: IRGraph, units: list[_Unit], expand: bool) -> list[_Run]:
    runs: list[_Run] = []
    previous = None
    for unit in units:
        signature = (unit.stage, _signature(graph, unit)) if unit.key[2] is not None else None
        if not expand and signature is not None and signature == previous:
            runs[-1].members.append(unit)
        else:
            runs.append(_Run(unit, [unit]))
        previous = signature
    return runs


class _BlockView:
    """Figure 3's look: the residual branch's layers in a column, its shortcut beside it."""

    def __init__(self, graph: IRGraph, expand: bool) -> None:
        self.graph = graph
        self.runs = _runs(graph, _units(graph, by_block=True), expand)
        self.alias: dict[str, str] = {}  # node of a collapsed block -> same node of the run's first block
        self.unit_of: dict[str, tuple] = {}
        self.boxes: dict[str, str] = {}  # shortcut node -> the box drawn for its whole chain
        for run in self.runs:
            for member in run.members:
                for node, same in zip(member.nodes, run.unit.nodes, strict=True):
                    self.alias[node] = same
            for node in run.unit.nodes:
                self.unit_of[node] = run.unit.key

    def visible(self, node: str) -> bool:
        """Main-branch layers the paper draws, tensors a block reads twice (a pre-activation, an SE input), and any
        node that failed; BN and ReLU are otherwise implied, and shortcuts are drawn by their add."""
        layer = self.graph.nodes[node]
        if layer.scope.branch == "shortcut":
            return False
        if not layer.op.implied or error_of(self.graph, node) is not None:
            return True
        return self.fork(node)

    def fork(self, node: str) -> bool:
        """Whether the block `node` is in reads its output twice; a block's output read by the next block is not a
        fork of its own (the next block's shortcut and first layer both read it)."""
        block = _block_of(self.graph, node)
        return sum(_block_of(self.graph, reader) == block for reader in self.graph.succ[node]) > 1

    def fork_text(self, node: str) -> str:
        """A fork of implied ops named with the hidden ops that lead to it in its block: "BN, ReLU"."""
        graph = self.graph
        chain = [node]
        while True:
            sources = inputs(graph, chain[0])
            if len(sources) != 1:
                break
            source = sources[0]
            layer = graph.nodes[source]
            if (not layer.op.implied or len(graph.succ[source]) != 1 or layer.args is None
                    or _block_of(graph, source) != _block_of(graph, node)):
                break
            chain.insert(0, source)
        return ", ".join(layer_text(graph.nodes[n].op, graph.nodes[n].args) for n in chain)

    def drawn(self, node: str) -> str | None:
        """The drawn node that carries `node`'s output (hidden ops pass their input through)."""
        while True:
            node = self.alias.get(node, node)
            if node in self.boxes:
                return self.boxes[node]
            if self.visible(node):
                return node
            sources = inputs(self.graph, node)
            if not sources:
                return None
            node = sources[0]

    def shortcut(self, add: str, source: str) -> tuple[list[str], str]:
        """The shortcut-branch nodes feeding `add` (in order), and the node the shortcut starts from."""
        chain: list[str] = []
        block = self.unit_of[add]
        while self.graph.nodes[source].scope.branch == "shortcut" and self.unit_of.get(source) == block:
            chain.insert(0, source)
            source = inputs(self.graph, source)[0]
        return chain, source

    def build(self) -> graphviz.Digraph:
        graph = self.graph
        diagram = _digraph(graph, "block")
        diagram.attr(splines="spline")
        fills = _fills(graph)
        for run in self.runs:
            fill = fills.get(run.unit.stage, _PLAIN_FILL)
            if len(run.members) > 1:
                first, last = run.members[0].key[2], run.members[-1].key[2]
                name = f"cluster_{run.unit.stage}.{first}"
                with _subgraph(diagram, name) as cluster:
                    cluster.attr(label=f"×{len(run.members)}", labeljust="r", labelloc="t", style="dashed,rounded",
                                 color="gray40", fontsize="12", tooltip=f"{run.unit.stage} blocks {first}–{last}")
                    self._draw_unit(cluster, run.unit, fill)
            else:
                self._draw_unit(diagram, run.unit, fill)
        self._edges(diagram)
        return diagram

    def _draw_unit(self, diagram: graphviz.Digraph, unit: _Unit, fill: str) -> None:
        calls = self.graph.calls
        self._draw_framed(diagram, [(node, _calls_of(node, calls)) for node in unit.nodes], 0, fill)

    def _draw_framed(self, diagram: graphviz.Digraph, nodes: list[tuple[str, list[str]]], depth: int,
                     fill: str) -> None:
        """The layers of a block called from the block (an SE gate) in a dotted frame named for it, nested as the
        calls are; `nodes` pairs each node with its calls, outermost first."""
        groups: dict[str | None, list[tuple[str, list[str]]]] = {}
        for node, chain in nodes:
            groups.setdefault(chain[depth] if len(chain) > depth else None, []).append((node, chain))
        for call, members in groups.items():
            if call is None:
                self._draw_nodes(diagram, [node for node, _ in members], fill)
                continue
            with _subgraph(diagram, f"cluster_{call}") as frame:
                frame.attr(label=self.graph.calls[call], labeljust="l", style="dotted,rounded",
                           color="gray45", fontsize="9")
                self._draw_framed(frame, members, depth + 1, fill)

    def _draw_nodes(self, diagram: graphviz.Digraph, nodes: list[str], fill: str) -> None:
        graph = self.graph
        for node in nodes:
            layer = graph.nodes[node]
            if layer.residual and layer.scope.branch == "main":
                self._draw_add(diagram, node, fill)
            elif layer.op.joins and self.visible(node):
                circle = {"shape": "circle", "style": "filled", "fillcolor": "white", "width": "0.22",
                          "height": "0.22", "fixedsize": "true", "fontsize": "10", "tooltip": layer.op.name}
                diagram.node(node, layer.op.joins, **(circle | _status(graph, node)))
            elif layer.op.arity == 0:  # the network's input, the one node that reads no tensor
                diagram.node(node, f"input\n{shape_text(layer.shape)}", shape="ellipse", style="filled")
            elif self.visible(node):
                if layer.placeholder:
                    label = _not_built(node)
                elif layer.op.implied and not error_of(graph, node):
                    label = self.fork_text(node)
                else:
                    label = layer_text(layer.op, layer.args)
                if error := error_of(graph, node):
                    label += "\n" + _wrap(error)
                diagram.node(node, label, width="1.7", **({"fillcolor": fill} | _status(graph, node)))

    def _draw_add(self, diagram: graphviz.Digraph, add: str, fill: str) -> None:
        """The paper's ⊕, with a projection shortcut's box beside it; a failed add is a red box."""
        graph = self.graph
        sources = inputs(graph, add)
        if len(sources) == 2:
            chain, _ = self.shortcut(add, sources[1])
            if self._boxed(chain):
                self._draw_box(diagram, chain, fill)
        error = error_of(graph, add)
        if error:
            diagram.node(add, f"add\n{_wrap(error)}", **_status(graph, add))
            return
        circle = {"shape": "circle", "style": "filled", "fillcolor": "white", "width": "0.22", "height": "0.22",
                  "fixedsize": "true", "fontsize": "11"}
        diagram.node(add, "+", **(circle | _status(graph, add)))

    def _boxed(self, chain: list[str]) -> bool:
        return any(self.graph.nodes[n].op.weighted or error_of(self.graph, n) for n in chain)

    def _draw_box(self, diagram: graphviz.Digraph, chain: list[str], fill: str) -> None:
        """A projection shortcut (options B, C, D) as one labelled box beside the residual branch."""
        graph = self.graph
        lines = [layer_text(graph.nodes[n].op, graph.nodes[n].args) for n in chain
                 if not graph.nodes[n].op.implied]
        lines += [_wrap(error) for n in chain if (error := error_of(graph, n))]
        box = chain[-1]
        weighted = any(graph.nodes[n].op.weighted for n in chain)
        status = next((_status(graph, n) for n in chain if error_of(graph, n)), _status(graph, box))
        diagram.node(box, "\n".join(lines), style="filled", fontsize="9", tooltip="projection shortcut",
                     **({"fillcolor": fill, "class": "projection" if weighted else "shortcut"} | status))
        for node in chain:
            self.boxes[node] = box

    def _edges(self, diagram: graphviz.Digraph) -> None:
        graph = self.graph
        labelled = graph.input_shape
        for run in self.runs:
            for node in run.unit.nodes:
                if not self.visible(node):
                    continue
                sources = inputs(graph, node)
                for index, source in enumerate(sources):
                    if graph.nodes[node].residual and index == 1:
                        self._shortcut_edge(diagram, node, source)
                        continue
                    start = self.drawn(source)
                    if start is None:
                        continue
                    attrs: dict[str, str] = {"weight": "8"}
                    shape = graph.nodes[source].shape
                    if self.unit_of.get(start) != self.unit_of[node] and shape != labelled:
                        attrs["label"] = f" {shape_text(shape)}"
                        labelled = shape
                    diagram.edge(start, node, **attrs)

    def _shortcut_edge(self, diagram: graphviz.Digraph, add: str, source: str) -> None:
        """Solid for identity, dashed for a parameter-free shortcut (option A), through the box otherwise."""
        chain, root = self.shortcut(add, source)
        start = self.drawn(root)
        if start is None:
            return
        if not chain:
            diagram.edge(start, add, weight="1", **{"class": "shortcut identity"})
        elif chain[-1] in self.boxes:
            box = self.boxes[chain[-1]]
            diagram.edge(start, box, weight="1", **{"class": "shortcut"})
            diagram.edge(box, add, weight="1", **{"class": "shortcut"})
        else:
            tip = ", ".join(layer_text(self.graph.nodes[n].op, self.graph.nodes[n].args) for n in chain)
            diagram.edge(start, add, style="dashed", weight="1", tooltip=tip,
                         **{"class": "shortcut parameter-free"})


def _block_view(graph: IRGraph, expand: bool) -> graphviz.Digraph:
    return _BlockView(graph, expand).build()


# --- op level ---------------------------------------------------------------------------------------

def _op_view(graph: IRGraph) -> graphviz.Digraph:
    diagram = _digraph(graph, "op")
    diagram.attr(ranksep="0.15", nodesep="0.25")
    fills = _fills(graph)
    for stage, blocks in _nested(graph):
        if stage is None:
            for unit in blocks:
                _op_nodes(diagram, graph, unit.nodes, "white")
            continue
        fill = fills.get(stage.stage, _PLAIN_FILL)
        with _subgraph(diagram, f"cluster_{stage.stage}") as outer:
            outer.attr(label=stage.stage, labeljust="l", style="rounded", color="gray50")
            for unit in blocks:
                if unit.key[2] is None:
                    _op_nodes(outer, graph, unit.nodes, fill)
                    continue
                with _subgraph(outer, f"cluster_{unit.stage}.{unit.key[2]}") as inner:
                    block_type = graph.nodes[unit.nodes[0]].scope.block_type
                    inner.attr(label=f"{unit.stage}.{unit.key[2]} ({block_type})", style="dashed,rounded",
                               color="gray60")
                    _op_nodes(inner, graph, unit.nodes, fill)
    for source, target, index in graph.edges():
        attrs = {"class": "shortcut"} if graph.nodes[target].residual and index == 1 else {}
        diagram.edge(source, target, **attrs)
    return diagram


def _nested(graph: IRGraph) -> Iterator[tuple[_Unit | None, list[_Unit]]]:
    """Blocks grouped by stage; io nodes on their own (no cluster)."""
    blocks = _units(graph, by_block=True)
    for stage in _units(graph, by_block=False):
        members = [u for u in blocks if u.key[:2] == stage.key[:2]]
        yield (None if stage.section == "io" else stage), members


def _op_nodes(diagram: graphviz.Digraph, graph: IRGraph, nodes: list[str], fill: str) -> None:
    for node in nodes:
        layer = graph.nodes[node]
        text = op_text(layer.op, layer.args)
        lines = [node] + ([text] if text != node and not layer.op.internal else [])
        lines.append(shape_text(graph.nodes[node].shape))
        if error := error_of(graph, node):
            lines.append(_wrap(error))
        shade = "white" if layer.scope.branch == "shortcut" else fill
        diagram.node(node, "\n".join(lines), **({"fillcolor": shade} | _status(graph, node)))
