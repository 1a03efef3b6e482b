"""`resdsl info FILE`: the paper's Table 1, computed, or the same as JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from resdsl import ast
from resdsl.cli.common import SetOption, SpecArgument, load_network
from resdsl.ir.ops import fmt
from resdsl.limits import human_bytes
from resdsl.network import Network


def info(
    spec: SpecArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    set_: SetOption = None,
) -> None:
    """Print each stage's output size, blocks, params and MACs, with totals, and the spec's training recipe."""
    network = load_network(spec, set_)
    if as_json:
        typer.echo(json.dumps(summary(network), indent=2))
        return
    typer.echo(table(network))
    if network.program.network.train is not None:
        from resdsl.recipe import summary_lines

        typer.echo("\ntrain (the spec's recipe)\n" + "\n".join(f"  {line}" for line in summary_lines(network.recipe)))


def summary(network: Network) -> dict:
    """The `--json` object of DESIGN.md §5."""
    return {
        "name": network.name,
        "input": list(network.input_shape),
        "output": list(network.output_shape),
        "params": network.params,
        "macs": network.macs,
        "activation_bytes": network.activation_bytes,
        "stages": [
            {"name": s.name, "blocks": s.blocks, "block": s.block, "shortcut": s.shortcut,
             **block_options(network).get(s.name, {}),
             "output": s.output, "params": s.params, "macs": s.macs, "activation_bytes": s.activation_bytes}
            for s in network.stages
        ],
        **({"recipe": network.recipe.to_json()} if network.program.network.train is not None else {}),
    }


BLOCK_OPTIONS = ("attn", "norm")  # the blocks' arguments shown per stage when the spec sets them off their default


def block_options(network: Network) -> dict[str, dict[str, str]]:
    """Per stage, the `attn` and `norm` its blocks are given as the spec writes them (`se`, `groupnorm(32)`), where
    that differs from the block's own default (`attn = none`, `norm = batchnorm` in the prelude)."""
    stages = network.program.network.stages
    if stages is None or stages.items is None:
        return {}
    summaries = [s.name for s in network.stages if s.name not in ("stem", "head")]
    found: dict[str, dict[str, str]] = {}
    for name, stage in zip(summaries, stages.items, strict=False):
        options = {kwarg.name: kwarg.value for kwarg in [*stages.options, *stage.options]}  # the stage's own win
        block = options.get("block")
        block_name = block.id if isinstance(block, ast.Name) else block.func if isinstance(block, ast.Call) else None
        for option in BLOCK_OPTIONS:
            if option in options and _written(options[option]) != _default(network, block_name, option):
                found.setdefault(name, {})[option] = _written(options[option])
    return found


def _default(network: Network, block: str | None, option: str) -> str | None:
    """The default a block (through its aliases) gives `option`, as written."""
    while block is not None and (definition := network.program.blocks.get(block)) is not None:
        if isinstance(definition, ast.BlockAlias):
            bound = {kwarg.name: kwarg.value for kwarg in definition.bindings}
            if option in bound:
                return _written(bound[option])
            block = definition.target
            continue
        formal = next((f for f in definition.formals if f.name == option), None)
        return _written(formal.default) if formal is not None and formal.default is not None else None
    return None


def _written(expr: ast.Expr | ast.Pair) -> str:
    """An option's value as a spec writes it: `se`, `groupnorm(32)`, `se(rd_ratio: 0.25)`."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Literal):
        return str(expr.value).lower() if isinstance(expr.value, bool) else str(expr.value)
    if isinstance(expr, ast.Pair):
        return f"{_written(expr.key)}: {_written(expr.value)}"
    if isinstance(expr, ast.Call):
        return f"{expr.func}({', '.join(_written(arg) for arg in expr.args)})"
    return "(an expression)"


def table(network: Network) -> str:
    options = block_options(network)
    shown = [option for option in BLOCK_OPTIONS if any(option in given for given in options.values())]
    header = ("stage", "output", "blocks", "block", *shown, "shortcut", "params", "MACs", "activations")
    rows: list[tuple[str, ...]] = [header]
    for s in network.stages:
        given = [options.get(s.name, {}).get(option, "") for option in shown]
        rows.append((s.name, fmt(tuple(s.output)), str(s.blocks) if s.blocks else "",
                     s.block or "", *given, s.shortcut or "", f"{s.params:,}", _si(s.macs),
                     human_bytes(s.activation_bytes)))
    rows.append(("total", fmt(network.output_shape), "", "", *[""] * len(shown), "", f"{network.params:,}",
                 _si(network.macs), human_bytes(network.activation_bytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, *(index + len(shown) for index in (5, 6, 7))}

    def line(row: tuple[str, ...]) -> str:
        cells = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in cells)

    rule = "  ".join("-" * w for w in widths)
    title = f"{network.name}: input {fmt(network.input_shape)}, MACs count conv and linear layers"
    return "\n".join([title, line(rows[0]), rule, *map(line, rows[1:-1]), rule, line(rows[-1])]).rstrip()


def _si(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3f}{unit}"
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
