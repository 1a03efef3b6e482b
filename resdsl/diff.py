"""Two checked networks compared: per-stage shapes and costs with deltas, then the layers added, removed or changed."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from resdsl.network import Network


@dataclass(frozen=True)
class Stage:
    """One stage's (or the stem's or head's) summary in one network."""

    output: tuple[int, ...]
    blocks: int
    params: int
    macs: int


@dataclass(frozen=True)
class Layer:
    """One IR node: its op, arguments, output shape and costs."""

    op: str
    args: dict[str, object]
    shape: tuple[int, ...] | None
    params: int
    macs: int

    def describe(self) -> str:
        args = ", ".join(f"{name} {_value(value)}" for name, value in self.args.items())
        shape = "x".join(map(str, self.shape)) if self.shape else "?"
        return f"{self.op}{' ' + args if args else ''} -> {shape}"


@dataclass(frozen=True)
class LayerChange:
    path: str
    change: str  # "added", "removed" or "changed"
    a: Layer | None
    b: Layer | None

    @property
    def params_delta(self) -> int:
        return (self.b.params if self.b else 0) - (self.a.params if self.a else 0)

    @property
    def macs_delta(self) -> int:
        return (self.b.macs if self.b else 0) - (self.a.macs if self.a else 0)


@dataclass(frozen=True)
class NetworkDiff:
    a: Network
    b: Network
    stages: list[tuple[str, Stage | None, Stage | None]]  # by name, in A's order then B's new ones
    layers: list[LayerChange]


def diff(a: Network, b: Network) -> NetworkDiff:
    """How `b` differs from `a`."""
    stages_a = {stage.name: _stage(stage) for stage in a.stages}
    stages_b = {stage.name: _stage(stage) for stage in b.stages}
    names = [*stages_a, *(name for name in stages_b if name not in stages_a)]
    return NetworkDiff(a, b, [(name, stages_a.get(name), stages_b.get(name)) for name in names], _layers(a, b))


def _stage(summary) -> Stage:
    return Stage(tuple(summary.output), summary.blocks, summary.params, summary.macs)


def _layers(a: Network, b: Network) -> list[LayerChange]:
    """The layers that differ, by label path, in the order the two networks run them (aligned like `diff`)."""
    nodes_a, nodes_b = _nodes(a), _nodes(b)
    names_a, names_b = list(nodes_a), list(nodes_b)
    changes: list[LayerChange] = []
    for tag, a0, a1, b0, b1 in difflib.SequenceMatcher(None, names_a, names_b, autojunk=False).get_opcodes():
        if tag == "equal":
            changes += [LayerChange(name, "changed", nodes_a[name], nodes_b[name]) for name in names_a[a0:a1]
                        if nodes_a[name] != nodes_b[name]]
            continue
        changes += [LayerChange(name, "removed", nodes_a[name], None) for name in names_a[a0:a1]
                    if name not in nodes_b]
        changes += [LayerChange(name, "added", None, nodes_b[name]) if name not in nodes_a
                    else LayerChange(name, "changed", nodes_a[name], nodes_b[name])
                    for name in names_b[b0:b1] if name not in nodes_a or nodes_a[name] != nodes_b[name]]
    return changes


def _nodes(network: Network) -> dict[str, Layer]:
    return {name: Layer(str(node.op), dict(node.args or {}), node.shape, node.meta.params, node.meta.macs)
            for name, node in network.graph.nodes.items()}


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def to_json(result: NetworkDiff, name_a: str, name_b: str) -> dict[str, object]:
    """The comparison as plain data, for tools."""
    return {
        "a": {"spec": name_a, "network": result.a.name, "params": result.a.params, "macs": result.a.macs},
        "b": {"spec": name_b, "network": result.b.name, "params": result.b.params, "macs": result.b.macs},
        "params_delta": result.b.params - result.a.params,
        "macs_delta": result.b.macs - result.a.macs,
        "stages": [{"name": name, "a": _stage_json(a), "b": _stage_json(b),
                    "params_delta": (b.params if b else 0) - (a.params if a else 0),
                    "macs_delta": (b.macs if b else 0) - (a.macs if a else 0)} for name, a, b in result.stages],
        "layers": [{"path": change.path, "change": change.change, "a": _layer_json(change.a),
                    "b": _layer_json(change.b), "params_delta": change.params_delta,
                    "macs_delta": change.macs_delta} for change in result.layers],
    }


def _stage_json(stage: Stage | None) -> dict[str, object] | None:
    if stage is None:
        return None
    return {"output": list(stage.output), "blocks": stage.blocks, "params": stage.params, "macs": stage.macs}


def _layer_json(layer: Layer | None) -> dict[str, object] | None:
    if layer is None:
        return None
    return {"op": layer.op, "args": {name: _value(value) for name, value in layer.args.items()},
            "shape": list(layer.shape) if layer.shape else None, "params": layer.params, "macs": layer.macs}


def render(result: NetworkDiff, name_a: str, name_b: str) -> str:
    """The comparison as a text table and a list of layer changes."""
    rows = [("stage", f"{name_a}", "", "", "", f"{name_b}", "", "", "", "delta", ""),
            ("", "output", "blocks", "params", "MACs", "output", "blocks", "params", "MACs", "params", "MACs")]
    for name, a, b in result.stages:
        rows.append((name, *_stage_cells(a), *_stage_cells(b), _signed((b.params if b else 0) - (a.params if a else 0)),
                     _signed((b.macs if b else 0) - (a.macs if a else 0))))
    rows.append(("total", "x".join(map(str, result.a.output_shape)), "", f"{result.a.params:,}",
                 f"{result.a.macs:,}", "x".join(map(str, result.b.output_shape)), "", f"{result.b.params:,}",
                 f"{result.b.macs:,}", _signed(result.b.params - result.a.params),
                 _signed(result.b.macs - result.a.macs)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if column < 2 or column == 5 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.append("")
    if not result.layers:
        lines.append("no layer differs")
    for change in result.layers:
        a = change.a.describe() if change.a else ""
        b = change.b.describe() if change.b else ""
        text = {"added": f"+ {change.path}: {b}", "removed": f"- {change.path}: {a}",
                "changed": f"~ {change.path}: {a}  =>  {b}"}[change.change]
        lines.append(f"{text}  ({_signed(change.params_delta)} params, {_signed(change.macs_delta)} MACs)")
    return "\n".join(lines)


def _stage_cells(stage: Stage | None) -> tuple[str, str, str, str]:
    if stage is None:
        return ("-", "", "", "")
    return ("x".join(map(str, stage.output)), str(stage.blocks), f"{stage.params:,}", f"{stage.macs:,}")


def _signed(value: int) -> str:
    return f"{value:+,}" if value else "0"
