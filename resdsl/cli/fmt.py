"""`resdsl fmt FILE...`: rewrite specs in the canonical layout (in place; `-` reads stdin and writes stdout)."""

from __future__ import annotations

import difflib
import os
import stat
import sys
from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import fail
from resdsl.diagnostics import SpecError
from resdsl.files import atomic_write, reason
from resdsl.format import format_text
from resdsl.source import SourceFile, UnreadableSpec, read_source_stream, read_source_text

STDIN = "-"


def fmt(
    paths: Annotated[list[str], typer.Argument(help="Spec files (.res), folders of them, or - for stdin.",
                                               show_default=False)],
    check: Annotated[bool, typer.Option("--check", help="Write nothing; list the files that would change and "
                                                        "exit 1 if any would.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Write nothing; print the changes as a unified diff.")] = False,
) -> None:
    """Lay specs out the one canonical way: spacing, indentation and line breaks; comments kept; network unchanged."""
    failed = changed = False
    for path in _spec_files(paths):
        text = _read(path)
        try:
            formatted = format_text(text, "<stdin>" if path == STDIN else path)
        except SpecError as error:  # report it and go on to the next file
            typer.echo(error.render(), err=True)
            failed = True
            continue
        original = SourceFile(path, text).text
        if formatted == original:
            if path == STDIN and not (check or diff):
                sys.stdout.write(formatted)
            continue
        changed = True
        if diff:
            sys.stdout.writelines(difflib.unified_diff(original.splitlines(True), formatted.splitlines(True),
                                                       f"{path} (original)", f"{path} (formatted)"))
        if check:
            typer.echo(path)
        elif not diff:
            _write(path, formatted)
    if failed or (check and changed):
        raise typer.Exit(1)


def _spec_files(paths: list[str]) -> list[str]:
    """The files named, a folder standing for the .res files under it; exit 1 at once if one is missing."""
    files: list[str] = []
    for name in paths:
        path = Path(name)
        if name == STDIN:
            files.append(name)
        elif path.is_dir():
            files.extend(str(spec) for spec in sorted(path.rglob("*.res")))
        elif path.exists():  # a FIFO or device too: _read says what it is
            files.append(name)
        else:
            fail(f"{name}: no such file or folder")
    return files


def _read(path: str) -> str:
    """The spec's text (stdin's for `-`), read as `check` reads it: size-limited, UTF-8, a byte-order mark dropped."""
    try:
        return read_source_stream(sys.stdin.buffer) if path == STDIN else read_source_text(Path(path))
    except UnreadableSpec as error:
        fail(f"cannot read {'stdin' if path == STDIN else path}: {error}")


def _write(path: str, text: str) -> None:
    if path == STDIN:
        sys.stdout.write(text)
        return
    target = Path(os.path.realpath(path))  # through a symlink to its file: the link stays a link
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
        with atomic_write(target) as file:
            os.fchmod(file.fileno(), mode)
            file.write(text.encode())
    except OSError as error:
        fail(f"cannot write {path}: {reason(error)}")


def register(app: typer.Typer) -> None:
    app.command("fmt")(fmt)
