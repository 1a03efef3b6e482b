"""`resdsl check FILE...`: parse and check specs, their `train` sections too; exit 1 if any is wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from resdsl.cli.common import SPEC, SetOption, complete_spec, load_network
from resdsl.diagnostics import SpecError
from resdsl.network import Network


def check(
    specs: Annotated[list[str], typer.Argument(help="Spec files (.res) or zoo names.", parser=SPEC,
                                               autocompletion=complete_spec, show_default=False)],
    set_: SetOption = None,
) -> None:
    """Check every tensor dimension of each spec, and its train settings; print one line per valid spec."""
    failed = False
    for spec in specs:
        try:
            network = load_network(spec, set_)
        except SpecError as error:  # report it and go on to the next spec
            typer.echo(error.render(), err=True)
            failed = True
            continue
        if not _train_section_is_valid(network):
            failed = True
            continue
        typer.echo(f"{spec}: ok ({network.name}, {network.params:,} params, "
                   f"{network.macs / 1e9:.3f} GMACs)")
    if failed:
        raise typer.Exit(1)


def _train_section_is_valid(network: Network) -> bool:
    """Validate the spec's own `train` section, if it has one (the recipe module is imported only then)."""
    if network.program.network.train is None:
        return True
    try:
        network.recipe  # noqa: B018 - validating is the point
    except SpecError as error:
        typer.echo(error.render(), err=True)
        return False
    return True


def register(app: typer.Typer) -> None:
    app.command("check")(check)
