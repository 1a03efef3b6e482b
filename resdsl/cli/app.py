"""The `resdsl` command: one module per subcommand, each with `register(app)`."""

from __future__ import annotations

import importlib

import typer

COMMANDS = ("check", "info", "build", "bench", "train", "eval", "plot", "viz")

app = typer.Typer(
    name="resdsl",
    help="A language and compiler for residual networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMANDS:
    importlib.import_module(f"resdsl.cli.{_name}").register(app)


def main() -> None:
    app()
