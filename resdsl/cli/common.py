"""What every subcommand shares: loading a spec with `--set`, checked file paths, and clean failures.

Errors reach the user through `resdsl.cli.app.report`: raise SpecError, UsageError or OSError, or call `fail`.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, BinaryIO, NoReturn

import typer

from resdsl import zoo
from resdsl.files import kind, output_problem, overwritten_input
from resdsl.limits import quoted
from resdsl.network import Network, check_program
from resdsl.resolve import UsageError, load, parse_overrides, read_spec
from resdsl.resolve import check_seed as seed_checked
from resdsl.resolve import check_workers as workers_checked


def complete_spec(incomplete: str) -> list[str]:
    """Shell completion of a spec argument: the zoo names that start with what was typed (files come from the shell)."""
    return [name for name in zoo.names() if name.startswith(incomplete)]


def fail(message: str, status: int = 1) -> NoReturn:
    """Print one plain sentence to stderr and exit (1: bad input, 2: bad usage)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def not_empty(name: str, what: str,
              into: Callable[[str | Path], object] = Path) -> Callable[[str | Path], object]:
    """A typer `parser` for a path or spec: `into(value)`, or exit 2 when the value is empty (Path("") means ".")."""

    def parse(value: str | Path) -> object:
        if isinstance(value, str) and not value.strip():
            fail(f"{name} is empty: give {what}", 2)
        return into(value)

    return parse


SPEC = not_empty("SPEC", "a spec file (.res) or a zoo name", str)
SpecArgument = Annotated[str, typer.Argument(help="A spec file (.res) or a zoo name (see resdsl zoo).", parser=SPEC,
                                             show_default=False, autocompletion=complete_spec)]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="NAME=VALUE", help="Give a spec param a value, e.g. --set n=18."),
]


def check_seed(value: int) -> int:
    """A typer callback for `--seed`: exit 2 unless resolve.check_seed takes it."""
    try:
        return seed_checked(value, "--seed")
    except UsageError as error:
        fail(str(error), 2)


def check_device(value: str | None) -> str | None:
    """A typer callback for `--device`: exit 2 unless cpu, cuda or cuda:N (whether it is here is checked later)."""
    if value is not None and not re.fullmatch(r"cpu|cuda(:[0-9]{1,4})?", value):
        fail(f"--device takes cpu, cuda or cuda:N, not {quoted(value)}", 2)
    return value


def check_workers(value: int | None) -> int | None:
    """A typer callback for `--workers`: exit 2 unless resolve.check_workers takes it."""
    try:
        return workers_checked(value, "--workers")
    except UsageError as error:
        fail(str(error), 2)


def load_network(spec: str, sets: list[str] | None) -> Network:
    """Compile a spec file or zoo name with `--set` values; raises SpecError, or UsageError for a bad --set."""
    overrides = parse_overrides(sets)
    return check_program(load(read_spec(zoo.resolve(spec)), overrides))


def regular_file(path: Path, flag: str) -> Path:
    """`path` if it is a regular file to read; else exit 1 saying what it is (before anything opens it)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        fail(f"{flag} {path}: {'no such file' if isinstance(error, FileNotFoundError) else error.strerror}")
    if not stat.S_ISREG(mode):
        fail(f"{flag} {path} is {kind(mode)}, not a regular file")
    return path


def output_file(path: Path, flag: str) -> Path:
    """`path` if a file may be written there (absent, or a regular file); else exit 1, before any work."""
    if (problem := output_problem(path, flag)) is not None:
        fail(problem)
    return path


def not_an_input(output: Path, flag: str, inputs: dict[str, str | Path | None]) -> None:
    """Exit 1 if `output` is one of the `inputs` (by what they are: "the spec"), which writing it would destroy."""
    if (problem := overwritten_input(output, flag, inputs)) is not None:
        fail(problem)


@contextmanager
def written(output: Path) -> Iterator[BinaryIO]:
    """`output` written whole or not at all (folders made as needed); a failure exits 1 naming it, leaving nothing."""
    from resdsl.files import atomic_write, folders_to_make, reason

    made = folders_to_make(output.parent)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(output) as file:
            yield file
    except OSError as error:
        for folder in made:  # the deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        fail(f"cannot write {output}: {reason(error)}")


CalibrationDatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help="The dataset --calibration holds (default: the one the --weights' recipe, else the spec's, "
                      "names).")]
