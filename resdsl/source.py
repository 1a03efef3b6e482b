"""Source files, the spans that point into them, and reading spec files safely."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

from resdsl.limits import MAX_SPEC_BYTES


@dataclass(frozen=True, slots=True)
class Span:
    """A range of characters in one source file, 1-based like editors show it."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class SourceFile:
    """The text of one spec file, kept so diagnostics can quote it. Line endings are normalised to `\\n`."""

    path: str
    text: str

    def __post_init__(self) -> None:
        if "\r" in self.text:  # CRLF and lone CR (old Mac) files: one line ending for the lexer and the quotes
            object.__setattr__(self, "text", self.text.replace("\r\n", "\n").replace("\r", "\n"))

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def start(self) -> Span:
        """The span of the first line, for errors about the whole file."""
        return Span(self.path, 1, 1, 1, len(self.line(1)) + 1)


class SourceMap:
    """Every file read while compiling one spec, by path."""

    def __init__(self) -> None:
        self.files: dict[str, SourceFile] = {}

    def add(self, source: SourceFile) -> SourceFile:
        self.files[source.path] = source
        return source

    def get(self, path: str) -> SourceFile | None:
        return self.files.get(path)

    def forget(self, path: str) -> None:
        """Stop quoting a file (one that turned out not to be a spec: its text is not ours to print)."""
        self.files.pop(path, None)


class UnreadableSpec(Exception):
    """A spec file that cannot be read; the message is one sentence without the path."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def read_source_text(path: Path) -> str:
    """A spec file's text: only regular files, no more than the size limit, UTF-8.

    Checked before reading, so that a FIFO, a device or a directory can neither hang nor flood us.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UnreadableSpec("no such file", missing=True) from None
    except OSError as error:
        raise UnreadableSpec(error.strerror or str(error)) from None
    except ValueError:  # a NUL character, which no path can hold
        raise UnreadableSpec("the path contains a NUL character") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, socket or device)"
            raise UnreadableSpec(f"it is {kind}")
        if info.st_size > MAX_SPEC_BYTES:
            raise UnreadableSpec(spec_too_large(f"{info.st_size:,} bytes"))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return read_source_stream(handle)
    except OSError as error:
        raise UnreadableSpec(error.strerror or str(error)) from None
    finally:
        os.close(fd)


def read_source_stream(stream: BinaryIO) -> str:
    """Spec text from an open binary stream (a file, stdin): no more than the size limit is read, then UTF-8."""
    data = stream.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise UnreadableSpec(spec_too_large(f"more than {MAX_SPEC_BYTES:,} bytes"))
    if b"\0" in data:
        raise UnreadableSpec("it is a binary file, not spec text (it holds NUL bytes)")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark, as some Windows editors write
    except UnicodeDecodeError as error:
        raise UnreadableSpec(f"it is not UTF-8 text (byte {error.start + 1} cannot be decoded)") from None


# Characters a terminal may act on: C0/C1 controls, DEL, and the bidirectional overrides that reorder a line.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`), so none reaches the terminal."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def spec_too_large(size: str) -> str:
    return (f"it is {size}, over the limit of {MAX_SPEC_BYTES:,} for a spec; write repeated layers as a block and "
            "stage lines, or split the file with `extends`")
