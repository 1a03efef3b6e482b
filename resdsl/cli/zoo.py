"""`resdsl zoo`: the shipped specs, each compiled, with its params, MACs and source."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from resdsl import zoo as shipped
from resdsl.diagnostics import SpecError
from resdsl.network import compile


def zoo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the zoo's specs (names for check, info, build, train and resdsl.compile) with params, MACs and source."""
    rows = [entry(spec) for spec in shipped.specs()]
    typer.echo(json.dumps(rows, indent=2) if as_json else table(rows))
    if any("error" in row for row in rows):
        raise typer.Exit(1)


def entry(spec: shipped.ZooSpec) -> dict:
    """One spec's JSON object: name, source, description, file, and its compiled shapes and counts."""
    row = {"name": spec.name, "source": spec.source, "description": spec.description, "file": str(spec.path)}
    try:
        network = compile(spec.path)
    except SpecError as error:  # a broken shipped spec is listed, not hidden
        return {**row, "error": error.render()}
    return {**row, "input": list(network.input_shape), "output": list(network.output_shape),
            "params": network.params, "macs": network.macs}


def table(rows: list[dict]) -> str:
    header = ("name", "source", "input", "params", "GMACs")
    cells = [header] + [
        (r["name"], r["source"], "x".join(map(str, r["input"])), f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}")
        if "error" not in r else (r["name"], r["source"], "", "", "does not compile: run resdsl check")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = {3, 4}

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def register(app: typer.Typer) -> None:
    app.command("zoo")(zoo)
