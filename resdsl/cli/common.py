"""What every subcommand shares: loading a spec with `--set`, checked file paths, and clean failures.

Errors reach the user through `resdsl.cli.app.report`: raise SpecError, UsageError or OSError, or call `fail`.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from resdsl import zoo
from resdsl.network import Network, _check
from resdsl.resolve import load, parse_override, read_spec


def complete_spec(incomplete: str) -> list[str]:
    """Shell completion of a spec argument: the zoo names that start with what was typed (files come from the shell)."""
    return [name for name in zoo.names() if name.startswith(incomplete)]


SpecArgument = Annotated[str, typer.Argument(help="A spec file (.res) or a zoo name (see resdsl zoo).",
                                             show_default=False, autocompletion=complete_spec)]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="NAME=VALUE", help="Give a spec param a value, e.g. --set n=18."),
]


def fail(message: str, status: int = 1) -> NoReturn:
    """Print one plain sentence to stderr and exit (1: bad input, 2: bad usage)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def load_network(spec: str, sets: list[str] | None) -> Network:
    """Compile a spec file or zoo name with `--set` values; raises SpecError, or UsageError for a bad --set."""
    overrides = dict(parse_override(item) for item in sets or [])
    return _check(load(read_spec(zoo.resolve(spec)), overrides))


def regular_file(path: Path, flag: str) -> Path:
    """`path` if it is a regular file to read; else exit 1 saying what it is (before anything opens it)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        fail(f"{flag} {path}: {'no such file' if isinstance(error, FileNotFoundError) else error.strerror}")
    if not stat.S_ISREG(mode):
        fail(f"{flag} {path} is {_kind(mode)}, not a regular file")
    return path


def output_file(path: Path, flag: str) -> Path:
    """`path` if a file may be written there (absent, or a regular file); else exit 1, before any work."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path
    except OSError as error:
        fail(f"{flag} {path}: {error.strerror}")
    if not stat.S_ISREG(mode):
        fail(f"{flag} {path} is {_kind(mode)}; give the name of a file to write")
    return path


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def human_bytes(value: int) -> str:
    """A byte count as people read it: `137.3 MiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"
