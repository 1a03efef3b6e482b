"""`resdsl check FILE...`: parse and check specs; exit 1 if any is wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from resdsl.cli.common import SetOption, load_network
from resdsl.diagnostics import SpecError


def check(
    specs: Annotated[list[str], typer.Argument(help="Spec files (.res) or zoo names.", show_default=False)],
    set_: SetOption = None,
) -> None:
    """Check every tensor dimension of each spec; print one line per valid spec."""
    failed = False
    for spec in specs:
        try:
            network = load_network(spec, set_)
        except SpecError as error:  # report it and go on to the next spec
            typer.echo(error.render(), err=True)
            failed = True
            continue
        typer.echo(f"{spec}: ok ({network.name}, {network.params:,} params, "
                   f"{network.macs / 1e9:.3f} GMACs)")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
