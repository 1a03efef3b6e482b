"""`resdsl diff A B`: two specs side by side, stage by stage, then the layers that differ."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from resdsl.cli.common import SetOption, SpecArgument, load_network
from resdsl.diff import diff as compare
from resdsl.diff import render, to_json


def diff(
    a: SpecArgument,
    b: SpecArgument,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare two networks: per-stage output shape, blocks, params and MACs with deltas, then layer changes."""
    result = compare(load_network(a, set_), load_network(b, set_))
    typer.echo(json.dumps(to_json(result, a, b), indent=2) if as_json else render(result, a, b))


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
