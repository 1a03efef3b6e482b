"""`resdsl fmt`'s canonical layout of a spec: the same tokens, laid out one way, comments kept where they are.

Layout: two spaces of indentation per `{`; one statement per line, except statements that the author joined with
`;` (kept, as `a; b`); a body written on one line stays on one line (`same { identity }`); at most one blank line
between statements, none after `{` or before `}`; one space between tokens, except none before `,` `:` `;` `)`
and around `.` in labels, none inside parentheses or after a unary minus, none between a block's or shortcut's
name and its parameter list; a parameter list broken over lines continues under its first parameter; trailing
comments two spaces after the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from resdsl.parser import _JoinParenthesised, parse
from resdsl.source import SourceFile, SourceMap

INDENT = "  "
_OPENING = ("LPAR", "CALL", "STAGES_CALL")
_NO_SPACE_BEFORE = ("COMMA", "RPAR", "COLON", "SEMICOLON", "DOT")
_NO_SPACE_AFTER = ("LPAR", "CALL", "STAGES_CALL", "DOT")
_LAYOUT = ("_NEWLINE", "SEMICOLON")  # separators: where they go is the layout's business


@dataclass(frozen=True)
class Item:
    """One token of the source, with the grammar rule it belongs to ("" for comments and line continuations)."""

    token: Token
    rule: str

    @property
    def type(self) -> str:
        return self.token.type

    @property
    def line(self) -> int:
        return self.token.line or 0

    @property
    def end_line(self) -> int:
        return self.token.end_line or 0


class _Collector:
    """The lark parser that keeps every token and records the ignored ones (comments, `\\` continuations)."""

    def __init__(self) -> None:
        self.ignored: list[Token] = []
        grammar = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text()
        self.lark = Lark(grammar, parser="lalr", keep_all_tokens=True, start="start", postlex=_JoinParenthesised(),
                         lexer_callbacks={"COMMENT": self.ignored.append,
                                          "LINE_CONTINUATION": self.ignored.append})

    def items(self, text: str) -> list[Item]:
        """Every token of `text` in source order; raises lark's UnexpectedInput on a syntax error."""
        self.ignored.clear()
        tree = self.lark.parse(text)
        items = [*_tokens(tree), *(Item(token, "") for token in self.ignored)]
        return sorted(items, key=lambda item: item.token.start_pos or 0)


def _tokens(tree: Tree[Token]) -> Iterator[Item]:
    for child in tree.children:
        if isinstance(child, Tree):
            yield from _tokens(child)
        elif isinstance(child, Token):
            yield Item(child, str(tree.data))


@cache
def _collector() -> _Collector:
    return _Collector()


def tokens(text: str) -> list[Item]:
    """Every token of a spec that parses, comments included, with its grammar rule (for fmt and its tests)."""
    return _collector().items(text)


def format_text(text: str, path: str = "<stdin>") -> str:
    """`text` in the canonical layout; raises SpecError (located) if it does not parse."""
    source = SourceFile(path, text)
    parse(source, SourceMap())  # the front end's own syntax errors, with their carets
    try:
        items = _collector().items(source.text)
    except UnexpectedInput as error:  # the front end accepted it, so this is our fault, not the user's
        raise AssertionError(f"fmt: cannot re-parse {path}: {error}") from None
    formatted = _Layout(items).text()
    if _significant(_collector().items(formatted)) != _significant(items):
        raise AssertionError(f"fmt: the layout of {path} changed its tokens or comments")
    return formatted


def _significant(items: list[Item]) -> list[tuple[str, str]]:
    """The tokens and comments, less separators and line continuations (a comment's trailing blanks go)."""
    return [(item.type, str(item.token).rstrip()) for item in items
            if item.type not in (*_LAYOUT, "LINE_CONTINUATION")]


class _Layout:
    """Lays the tokens out line by line."""

    def __init__(self, items: list[Item]) -> None:
        self.items = [item for item in items if item.type != "_NEWLINE"]
        self.inline = _inline_braces(self.items)
        self.lines: list[str] = []
        self.line = ""  # the line being built, its indentation included
        self.depth = 0
        self.parens: list[int] = []  # the output column after each open parenthesis
        self.continued = False  # the next line continues a statement after a `\`

    def text(self) -> str:
        previous: Item | None = None
        for index, item in enumerate(self.items):
            if item.type == "SEMICOLON":
                if not self._keeps_semicolon(index):
                    continue
            elif previous is not None and self._breaks_before(previous, item):
                self._newline(blank=item.line - previous.end_line > 1 and item.type != "RBRACE")
            self._put(index, item, previous)
            previous = item
        self._flush()
        return "\n".join(self.lines) + "\n" if self.lines else ""

    def _keeps_semicolon(self, index: int) -> bool:
        """A `;` stays only between two statements on one line."""
        before = self.items[index - 1] if index else None
        after = self.items[index + 1] if index + 1 < len(self.items) else None
        return (before is not None and after is not None and before.type not in ("SEMICOLON", "LBRACE")
                and after.type not in ("SEMICOLON", "RBRACE") and after.rule != ""
                and after.line == before.end_line)

    def _breaks_before(self, previous: Item, item: Item) -> bool:
        if previous.type == "LINE_CONTINUATION" or previous.type == "COMMENT":
            return True
        if item.type == "COMMENT":
            return item.line != previous.end_line
        if previous.type == "LBRACE" and id(previous) not in self.inline:
            return True
        if item.type == "RBRACE" and id(item) not in self.inline:
            return True
        return item.line != previous.end_line

    def _newline(self, blank: bool) -> None:
        self._flush()
        if self.parens:  # a parameter list goes on under its first parameter
            self.line = " " * self.parens[-1]
            return
        if blank and self.lines and self.lines[-1] and not self.lines[-1].endswith("{"):
            self.lines.append("")
        if self.continued:
            self.line = INDENT * (self.depth + 2)
            self.continued = False

    def _flush(self) -> None:
        if self.line.strip():
            self.lines.append(self.line.rstrip())
        self.line = ""

    def _put(self, index: int, item: Item, previous: Item | None) -> None:
        token = item.token
        if item.type == "RBRACE" and id(item) not in self.inline:
            self.depth -= 1
        if not self.line.strip():  # the line's first token (a continuation line is indented already)
            self.line = self.line or INDENT * self.depth
        elif item.type == "COMMENT":
            self.line += "  "
        elif previous is not None and _spaced(previous, item):
            self.line += " "
        if item.type == "LINE_CONTINUATION":
            self.line += "\\"
            self.continued = True
        else:
            self.line += str(token)
        if item.type in _OPENING:
            self.parens.append(len(self.line))
        elif item.type == "RPAR" and self.parens:
            self.parens.pop()
        elif item.type == "LBRACE" and id(item) not in self.inline:
            self.depth += 1


def _spaced(previous: Item, item: Item) -> bool:
    """Whether one space separates two tokens on one line."""
    if item.type in _NO_SPACE_BEFORE or previous.type in _NO_SPACE_AFTER:
        return False
    if previous.type == "MINUS" and previous.rule in ("neg", "drop"):
        return False
    if any(token.rule == "path" and token.type in ("LBRACE", "RBRACE") for token in (previous, item)):
        return False  # a computed part of a label: `convs.{i}`, `b{i + 1}`
    return not (item.type == "LPAR" and item.rule in ("block_def", "shortcut_def"))


def _inline_braces(items: list[Item]) -> set[int]:
    """The ids of the braces whose body is written on one line (they stay on one line)."""
    inline: set[int] = set()
    opened: list[Item] = []
    for item in items:
        if item.type == "LBRACE":
            opened.append(item)
        elif item.type == "RBRACE" and opened:
            start = opened.pop()
            if start.line == item.line:
                inline.update((id(start), id(item)))
    return inline

