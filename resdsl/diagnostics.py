"""Diagnostics: `FILE:LINE:COL: error: message`, the source line, and a caret."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from resdsl.source import SourceMap, Span, printable

MAX_SHOWN = 50  # errors printed for one spec; the rest are counted


@dataclass(frozen=True)
class Note:
    """A secondary location that explains an error (e.g. the block it came from)."""

    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    """One error in a spec, anchored at the construct at fault."""

    span: Span | None
    message: str
    notes: tuple[Note, ...] = field(default=())

    def render(self, sources: SourceMap | None = None) -> str:
        """Format as a compiler would: location, message, quoted line, caret."""
        lines = [_headline(self.span, "error", self.message)]
        lines += _quote(self.span, sources)
        for note in self.notes:
            lines.append(_headline(note.span, "note", note.message))
            lines += _quote(note.span, sources)
        return "\n".join(lines)


class SpecError(Exception):
    """A spec is wrong; carries every independent diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], sources: SourceMap | None = None, more: int = 0) -> None:
        self.diagnostics = diagnostics
        self.sources = sources
        self.more = more
        super().__init__(self.render())

    def render(self) -> str:
        text = "\n".join(d.render(self.sources) for d in self.diagnostics)
        return text + (f"\n... and {self.more:,} more errors" if self.more else "")


class Diagnostics:
    """Collects the diagnostics of one compilation, so that independent errors are all reported at once."""

    def __init__(self, sources: SourceMap) -> None:
        self.sources = sources
        self.diagnostics: list[Diagnostic] = []
        self._seen: set[tuple[Span | None, str]] = set()
        self.more = 0

    def error(self, span: Span | None, message: str, notes: tuple[Note, ...] = ()) -> None:
        # The same error at the same place (e.g. once per block of a stage) is reported once.
        if (span, message) in self._seen:
            return
        self._seen.add((span, message))
        if len(self.diagnostics) < MAX_SHOWN:
            self.diagnostics.append(Diagnostic(span, message, notes))
        else:
            self.more += 1

    def fail(self, span: Span | None, message: str) -> SpecError:
        """An error that stops compilation at once."""
        self.error(span, message)
        return self.exception()

    def exception(self) -> SpecError:
        return SpecError(self.diagnostics, self.sources, self.more)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise self.exception()


_QUOTE_WIDTH = 160


def _headline(span: Span | None, severity: str, message: str) -> str:
    return printable(f"{span}: {severity}: {message}" if span else f"{severity}: {message}")


def _quote(span: Span | None, sources: SourceMap | None) -> list[str]:
    source = sources.get(span.path) if (sources and span) else None
    if source is None or span is None:
        return []
    text = source.line(span.line).replace("\t", " ")
    if not text.strip():
        return []
    end = span.end_column if span.end_line == span.line else len(text) + 1
    column = span.column
    if len(text) > _QUOTE_WIDTH:  # show a window of a very long line around the column
        start = max(0, min(column - 1 - _QUOTE_WIDTH // 4, len(text) - _QUOTE_WIDTH))
        text = text[start:start + _QUOTE_WIDTH]
        column, end = column - start, min(end - start, _QUOTE_WIDTH + 1)
    # control characters are shown escaped, so the caret moves by what their escapes add before it, and by the
    # terminal cells of what is shown: two for a wide (CJK, emoji) character, none for a combining one
    shown_column = _cells(printable(text[: column - 1])) + 1
    width = max(1, _cells(printable(text[column - 1:end - 1])))
    return [f"  {printable(text)}", "  " + " " * (shown_column - 1) + "^" + "~" * (width - 1)]


# drawn on the character before (nonspacing and enclosing marks, whatever their combining class) or not at all
_NO_CELL = ("Mn", "Me", "Cf")


def _cells(text: str) -> int:
    """How many terminal cells `text` takes."""
    return sum(0 if unicodedata.category(char) in _NO_CELL else 2 if unicodedata.east_asian_width(char) in "WF"
               else 1 for char in text)
