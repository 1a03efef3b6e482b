"""`resdsl viz FILE [-o OUT]`: draw the network with Graphviz (stage chain, blocks, or every op).

A spec that fails its checks is still drawn, failing nodes in red; the diagnostics go to stderr,
the file is written, and the exit status is 1. A spec that does not parse writes nothing.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resdsl import zoo
from resdsl.cli.common import SetOption, SpecArgument, fail, not_an_input, not_empty, output_file, written
from resdsl.diagnostics import SpecError
from resdsl.resolve import parse_overrides

if TYPE_CHECKING:
    from resdsl.ir.graph import IRGraph


class Level(StrEnum):
    stage = "stage"
    block = "block"
    op = "op"


def viz(
    spec: SpecArgument,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write: .svg, .png, .pdf or .dot "
                                                "[default: the spec's name with .svg, in the current folder].",
                                                parser=not_empty("-o", "a file to write"), show_default=False)] = None,
    level: Annotated[Level, typer.Option(help="stage: Table 1 as a chain; block: the paper's Figure 3; "
                                              "op: every IR node.")] = Level.block,
    expand: Annotated[bool, typer.Option("--expand", help="Draw every block instead of one per run "
                                                          "of identical blocks with \"×N\".")] = False,
    set_: SetOption = None,
) -> None:
    """Draw the network with Graphviz. A spec that fails its checks is still drawn, the failing
    nodes in red with their diagnostics, and the command exits 1."""
    from resdsl.viz import FORMATS, RenderError, draw, render

    output = output or Path(f"{Path(spec).stem or 'network'}.svg")
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        fail(f"cannot tell the format of '{output}'; name the output .svg, .png, .pdf or .dot", 2)
    output_file(output, "-o")
    not_an_input(output, "-o", {"the spec": zoo.resolve(spec)})
    graph, error = _lower(spec, set_)
    try:
        data = render(draw(graph, level.value, expand), fmt)
    except RenderError as problem:
        fail(str(problem))
    with written(output) as file:
        file.write(data)
    if error is not None:
        typer.echo(error.render(), err=True)
        typer.echo(f"wrote {output}, with the nodes that fail their checks in red", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {output}")


def _lower(spec: str, sets: list[str] | None) -> tuple[IRGraph, SpecError | None]:
    """The IR even when checks fail (a spec that does not parse raises SpecError, a bad --set UsageError)."""
    from resdsl.network import lower_unchecked

    return lower_unchecked(spec, **parse_overrides(sets))


def register(app: typer.Typer) -> None:
    app.command("viz")(viz)
