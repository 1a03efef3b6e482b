"""The language server: pygls handlers that turn LSP requests into questions to `resdsl.lsp.analysis`."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace.position_codec import PositionCodec

from resdsl import __version__
from resdsl.diagnostics import Diagnostic
from resdsl.lsp import analysis
from resdsl.source import SourceFile, Span, UnreadableSpec, read_source_text

DEBOUNCE_S = 0.05  # edits closer together than this are analysed once, after the last
READ_CHUNK = 1 << 20  # a message body is read this much at a time, so memory follows the bytes that arrive

_SYMBOL_KINDS = {"network": types.SymbolKind.Class, "section": types.SymbolKind.Namespace,
                 "stage": types.SymbolKind.Field, "block": types.SymbolKind.Function,
                 "shortcut": types.SymbolKind.Interface, "param": types.SymbolKind.Variable}
_COMPLETION_KINDS = {"op": types.CompletionItemKind.Function, "block": types.CompletionItemKind.Class,
                     "shortcut": types.CompletionItemKind.Interface, "param": types.CompletionItemKind.Variable,
                     "keyword": types.CompletionItemKind.Keyword, "file": types.CompletionItemKind.File}


class ResdslServer(LanguageServer):
    """Keeps each open document's latest analysis, and the last one that parsed (for the outline)."""

    def __init__(self) -> None:
        super().__init__("resdsl", __version__)
        self.latest: dict[str, analysis.Analysis] = {}
        self.parsed: dict[str, analysis.Analysis] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}

    def analyse(self, uri: str) -> None:
        """Run the front end over the document now and publish its diagnostics."""
        text, version = self.text(uri)
        result = analysis.analyse(_path(uri), text)
        self.latest[uri] = result
        if result.module is not None:
            self.parsed[uri] = result
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=version,
            diagnostics=[_diagnostic(d, result, self.workspace.position_codec) for d in result.diagnostics]))

    def text(self, uri: str) -> tuple[str, int | None]:
        """The document's text and version: the editor's copy if open, else the file read as `check` reads it
        ("" if it cannot be), as pygls would read any file whole, a named pipe forever."""
        document = self.workspace.text_documents.get(unquote(uri))  # pygls keys them so: `my%20net.res` is open
        if document is not None:
            return document.source, document.version
        try:
            return read_source_text(Path(_path(uri))), None
        except UnreadableSpec:
            return "", None

    def schedule(self, uri: str) -> None:
        """Analyse after DEBOUNCE_S without further edits."""
        if (task := self.pending.pop(uri, None)) is not None:
            task.cancel()

        async def later() -> None:
            await asyncio.sleep(DEBOUNCE_S)
            self.pending.pop(uri, None)
            self.analyse(uri)

        self.pending[uri] = asyncio.ensure_future(later())

    def current(self, uri: str) -> analysis.Analysis:
        if uri not in self.latest or self.latest[uri].text != self.text(uri)[0]:
            self.analyse(uri)  # a request that arrives before the debounced analysis
        return self.latest[uri]


server = ResdslServer()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: ResdslServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.analyse(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: ResdslServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: ResdslServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: ResdslServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.latest.pop(uri, None)
    ls.parsed.pop(uri, None)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: ResdslServer, params: types.HoverParams) -> types.Hover | None:
    current = ls.current(params.text_document.uri)
    line, column = _position(params.position, current.text, ls.workspace.position_codec)
    text = analysis.hover(current, line, column)
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def definition(ls: ResdslServer, params: types.DefinitionParams) -> types.Location | None:
    current = ls.current(params.text_document.uri)
    line, column = _position(params.position, current.text, ls.workspace.position_codec)
    target = analysis.extends_target(current, line, column)
    if target is not None:
        return types.Location(uri=from_fs_path(str(target)) or "", range=_range_at(1, 1, 1, 1))
    word = analysis.word_at(current.text, line, column)
    found = analysis.definition_of(current, word[0]) if word else None
    if found is None:
        return None
    span = found.span
    return types.Location(uri=from_fs_path(str(Path(span.path).resolve())) or "",
                          range=_range(span, current, ls.workspace.position_codec))


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[":", " ", '"']))
def completion(ls: ResdslServer, params: types.CompletionParams) -> types.CompletionList:
    current = ls.current(params.text_document.uri)
    line, column = _position(params.position, current.text, ls.workspace.position_codec)
    names = analysis.completions(current, line, column)
    return types.CompletionList(is_incomplete=False, items=[
        types.CompletionItem(label=name, kind=_COMPLETION_KINDS[kind], detail=kind) for name, kind in names])


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def document_symbols(ls: ResdslServer, params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
    uri = params.text_document.uri
    ls.current(uri)
    good = ls.parsed.get(uri)  # a file that no longer parses keeps its last outline
    return [] if good is None or good.module is None else [_symbol(s, good, ls.workspace.position_codec)
                                                              for s in analysis.outline(good.module)]


def _symbol(symbol: analysis.Symbol, document: analysis.Analysis, codec: PositionCodec) -> types.DocumentSymbol:
    span = _range(symbol.span, document, codec)
    return types.DocumentSymbol(name=symbol.name, kind=_SYMBOL_KINDS[symbol.kind], range=span, selection_range=span,
                                children=[_symbol(child, document, codec) for child in symbol.children])


def _diagnostic(diagnostic: Diagnostic, document: analysis.Analysis, codec: PositionCodec) -> types.Diagnostic:
    """An LSP diagnostic; one whose place is in another file (a parent, the prelude) is shown on line 1."""
    span, path = diagnostic.span, document.path
    here = span is not None and analysis.contains(span, path, span.line, span.column)
    message = diagnostic.message if here or span is None else f"{span}: {diagnostic.message}"
    related = [types.DiagnosticRelatedInformation(
        location=types.Location(uri=from_fs_path(str(Path(note.span.path).resolve())) or "",
                                range=_range(note.span, document, codec)),
        message=note.message) for note in diagnostic.notes]
    return types.Diagnostic(range=_range(span, document, codec) if here and span else _range_at(1, 1, 1, 1),
                            message=message,
                            severity=types.DiagnosticSeverity.Error, source="resdsl",
                            related_information=related or None)


def _range(span: Span, document: analysis.Analysis, codec: PositionCodec) -> types.Range:
    """`span` in the client's units (the position encoding negotiated, UTF-16 unless it asked for another) of the
    document's text, or its file's."""
    lines = _lines(document.text if span.path == document.path else None, span.path)
    return types.Range(start=_client_position(lines, span.line, span.column, codec),
                       end=_client_position(lines, span.end_line, span.end_column, codec))


def _lines(text: str | None, path: str) -> list[str]:
    """`text`'s lines, or those of the file at `path` if no text is given ([] if it cannot be read)."""
    if text is None:
        try:
            text = read_source_text(Path(path))
        except UnreadableSpec:
            return []
    return SourceFile(path, text).lines


def _client_position(lines: list[str], line: int, column: int, codec: PositionCodec) -> types.Position:
    """The LSP position of 1-based code-point `column` on `line` (in UTF-16, a character beyond U+FFFF is two)."""
    before = lines[line - 1][:column - 1] if 0 < line <= len(lines) else ""
    units = codec.client_num_units(before)
    return types.Position(line=line - 1, character=units + max(0, column - 1 - len(before)))


def _range_at(line: int, column: int, end_line: int, end_column: int) -> types.Range:
    return types.Range(start=types.Position(line=line - 1, character=column - 1),
                       end=types.Position(line=end_line - 1, character=end_column - 1))


def _position(position: types.Position, text: str, codec: PositionCodec) -> tuple[int, int]:
    """The 1-based line and code-point column of an LSP position in `text`, counted in the client's units."""
    lines = SourceFile("", text).lines
    line = lines[position.line] if position.line < len(lines) else ""
    units = column = 0
    for char in line:
        if units >= position.character:
            break
        units += codec.client_num_units(char)
        column += 1
    return position.line + 1, column + 1 + max(0, position.character - units)


def _path(uri: str) -> str:
    return to_fs_path(uri) or uri


class _ChunkedReader:
    """stdin for pygls, whose `read(n)` would allocate the n bytes a message's Content-Length merely claims."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def readline(self) -> bytes:
        return self.stream.readline()

    def read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        while size > 0 and (chunk := self.stream.read(min(size, READ_CHUNK))):
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def _without_traceback(record: logging.LogRecord) -> bool:
    """A log record of pygls's in one line, its exception's message kept: the error log is for the user, not a
    traceback (pygls attaches some, and formats others into the message)."""
    first, *rest = record.getMessage().split("\n")
    reasons = [line.strip(" |") for line in rest if re.match(r"\s*[| ]*[A-Za-z_.]+(Error|Exception): ", line)]
    if record.exc_info is not None and record.exc_info[1] is not None:
        reasons.append(str(record.exc_info[1]))
    record.msg, record.args = ": ".join([first, *reasons[-1:]]), None
    record.exc_info = record.exc_text = None
    return True


def serve() -> None:
    """Serve over stdin and stdout until the client exits."""
    log = logging.StreamHandler(sys.stderr)
    log.addFilter(_without_traceback)
    pygls_log = logging.getLogger("pygls")
    pygls_log.addHandler(log)
    pygls_log.propagate = False
    server.start_io(cast(BinaryIO, _ChunkedReader(sys.stdin.buffer)))  # pygls calls only readline() and read()
