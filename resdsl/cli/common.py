"""What every subcommand shares: loading a spec with `--set`, and clean failures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from resdsl.diagnostics import SpecError
from resdsl.network import Network, _check
from resdsl.resolve import UsageError, load, parse_override, read_spec

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="NAME=VALUE", help="Give a spec param a value, e.g. --set n=18."),
]


def fail(message: str, status: int = 1) -> NoReturn:
    """Print one plain sentence to stderr and exit (1: bad input, 2: bad usage)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def resolve_spec_path(spec: str) -> str:
    """A path as given, or the name of a spec in the shipped zoo (`resnet50`, `torchvision/resnet50`)."""
    if Path(spec).exists() or spec.endswith(".res"):
        return spec
    from importlib import resources

    zoo = resources.files("resdsl.specs").joinpath(f"{spec}.res")
    return str(zoo) if zoo.is_file() else spec


def load_network(spec: str, sets: list[str] | None) -> Network:
    """Compile a spec for the CLI: diagnostics and exit 1 on a spec error, exit 2 on bad --set."""
    try:
        overrides = dict(parse_override(item) for item in sets or [])
        return _check(load(read_spec(resolve_spec_path(spec)), overrides))
    except UsageError as error:
        fail(str(error), 2)
    except SpecError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it into place only if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(temp)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes files private; give the output normal permissions
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def human_bytes(value: int) -> str:
    """A byte count as people read it: `137.3 MiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"
