"""Source files and the spans that point into them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_SPEC_BYTES = 1_000_000


class Span(BaseModel):
    """A range of characters in one source file, 1-based like editors show it."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class SourceFile(BaseModel):
    """The text of one spec file, kept so diagnostics can quote it."""

    model_config = ConfigDict(frozen=True)

    path: str
    text: str

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


class SourceMap:
    """Every file read while compiling one spec, by path."""

    def __init__(self) -> None:
        self.files: dict[str, SourceFile] = {}

    def add(self, source: SourceFile) -> SourceFile:
        self.files[source.path] = source
        return source

    def get(self, path: str) -> SourceFile | None:
        return self.files.get(path)
