"""`resdsl info FILE`: the paper's Table 1, computed, or the same as JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer

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
             "output": s.output, "params": s.params, "macs": s.macs, "activation_bytes": s.activation_bytes}
            for s in network.stages
        ],
        **({"recipe": network.recipe.model_dump(mode="json")} if network.program.network.train is not None else {}),
    }


def table(network: Network) -> str:
    header = ("stage", "output", "blocks", "block", "shortcut", "params", "MACs", "activations")
    rows = [header]
    for s in network.stages:
        rows.append((s.name, fmt(tuple(s.output)), str(s.blocks) if s.blocks else "",
                     s.block or "", s.shortcut or "", f"{s.params:,}", _si(s.macs),
                     human_bytes(s.activation_bytes)))
    rows.append(("total", fmt(network.output_shape), "", "", "", f"{network.params:,}", _si(network.macs),
                 human_bytes(network.activation_bytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 5, 6, 7}

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
