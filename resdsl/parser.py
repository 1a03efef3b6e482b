"""Text to AST: lark parses with `grammars/resdsl.lark`, a Transformer builds the models."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from resdsl import ast
from resdsl.diagnostics import Diagnostic, Note, SpecError
from resdsl.limits import MAX_LITERAL_DIGITS, MAX_SPEC_BYTES
from resdsl.source import SourceFile, SourceMap, Span


class _JoinParenthesised:
    """Drops line ends inside parentheses, so that a long parameter list may span lines (as in Python)."""

    always_accept = ("_NEWLINE",)

    def process(self, tokens: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        for token in tokens:
            if token.type in ("LPAR", "CALL", "STAGES_CALL"):
                depth += 1
            elif token.type == "RPAR":
                depth = max(depth - 1, 0)
            elif token.type == "_NEWLINE" and depth:
                continue
            yield token


_OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True, "start": ["start", "setting"]}


@cache
def _parser() -> Lark:
    """The LALR parser; its tables are cached in the user's cache folder (lark's `cache=`, saves ~80 ms a run)."""
    grammar = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text()
    key = hashlib.sha256(f"{grammar}{_OPTIONS}{lark.__version__}{sys.version_info[:2]}".encode()).hexdigest()[:24]
    folder = _cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cached = str(folder / f"parser-{key}.lark") if os.access(folder, os.W_OK) else False
    except OSError:  # no writable home: build the tables each time
        cached = False
    return Lark(grammar, postlex=_JoinParenthesised(), cache=cached, **_OPTIONS)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resdsl"


def parse(source: SourceFile, sources: SourceMap) -> ast.Module:
    """Parse one file; a syntax error raises SpecError pointing at the bad token."""
    return _parse(source, sources, "start")


def parse_setting(source: SourceFile, sources: SourceMap) -> ast.Setting:
    """Parse one `train` setting line on its own (e.g. a command-line override such as `lr 0.05`)."""
    return _parse(source, sources, "setting")


def _parse(source: SourceFile, sources: SourceMap, start: str):
    sources.add(source)
    if len(source.text) > MAX_SPEC_BYTES:
        raise SpecError([Diagnostic(source.start(), f"spec is larger than {MAX_SPEC_BYTES:,} bytes")], sources)
    try:
        tree = _parser().parse(source.text, start=start)
    except UnexpectedInput as error:
        raise SpecError([_syntax_diagnostic(error, source)], sources) from None
    builder = _ToAst(source.path)
    result = builder.transform(tree)
    if builder.errors:
        raise SpecError(builder.errors, sources)
    return result


_TOKEN_WORDS = {
    "_NEWLINE": "end of line", "SEMICOLON": "';'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "SHAPE": "a shape like 3x224x224",
    "STRING": "a quoted path", "CALL": "a call", "X": "'x'", "$END": "end of file",
    "MINUS": "'-'", "ADD_OP": "'+'", "MUL_OP": "'*'", "COMPARE": "a comparison", "DOT": "'.'",
    "OVERRIDE": "'override'", "FROM": "'from'",
}


def _syntax_diagnostic(error: UnexpectedInput, source: SourceFile) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    notes: tuple[Note, ...] = ()
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END")
    if at_end:
        message = "unexpected end of file (a '}' may be missing)"
        lines = source.text.rstrip("\n").split("\n")
        line, column = len(lines), len(lines[-1]) + 1
        notes = _unclosed_brace(source)
    elif isinstance(error, UnexpectedCharacters):
        char = source.text[error.pos_in_stream]
        message = ("unterminated string (a closing '\"' is missing on this line)" if char == '"'
                   else f"unexpected character {char!r}")
    elif isinstance(error, UnexpectedToken):
        found = error.token
        shown = "end of line" if found.type == "_NEWLINE" else repr(str(found))
        expected = sorted({_TOKEN_WORDS.get(t, repr(t.lower())) for t in error.expected})
        message = f"unexpected {shown}; expected {_join(expected)}"
        if "RBRACE" in error.expected and str(found) in _SECTION_WORDS and _first_on_its_line(source, line, column):
            notes = _unclosed_brace(source, before=(line, column))
    else:
        message = "syntax error"
    end = column + max(1, len(str(getattr(error, "token", "") or " ").strip() or " "))
    return Diagnostic(Span(source.path, line, column, line, end), message, notes)


# Words that start a section or a definition: met where a '}' could go, the block before lacks one.
_SECTION_WORDS = frozenset({"stem", "stages", "head", "train", "network", "block", "shortcut", "param"})


def _first_on_its_line(source: SourceFile, line: int, column: int) -> bool:
    return not source.line(line)[: column - 1].strip()


def _unclosed_brace(source: SourceFile, before: tuple[int, int] | None = None) -> tuple[Note, ...]:
    """A note at the '{' most likely left open (before a position, if given), skipping comments and strings.

    A '}' that starts its line closes the '{' opened on a line of the same indentation; any '{' opened
    after that one and still open is the one missing its '}'.
    """
    open_braces: list[tuple[int, int, int]] = []  # line, column, indentation of the line
    skipped: list[tuple[int, int, int]] = []
    for number, text in enumerate(source.lines, start=1):
        indent, in_string = len(text) - len(text.lstrip()), False
        for column, char in enumerate(text, start=1):
            if before is not None and (number, column) >= before:
                break
            if char == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif char == "#":
                break
            elif char == "{":
                open_braces.append((number, column, indent))
            elif char == "}" and open_braces:
                same = [i for i, brace in enumerate(open_braces) if brace[2] == indent]
                if column == indent + 1 and same and same[-1] < len(open_braces) - 1:
                    skipped += open_braces[same[-1] + 1:]
                    del open_braces[same[-1] + 1:]
                open_braces.pop()
    unclosed = skipped[:1] or open_braces[-1:]
    if not unclosed:
        return ()
    line, column, _ = unclosed[0]
    return (Note(Span(source.path, line, column, line, column + 1), "this '{' is not closed"),)


def _join(words: list[str]) -> str:
    if len(words) > 6:
        return ", ".join(words[:6]) + ", ..."
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Parse tree to AST; purely structural, except that oversized literals are noted (not raised) as errors.

    Non-recursive, so that `1 + 1 + ...` thousands of terms long cannot overflow the stack.
    """

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file
        self.errors: list[Diagnostic] = []

    def _span(self, meta) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _token_span(self, token: Token) -> Span:
        return Span(self.file, token.line, token.column, token.end_line, token.end_column)

    def _digits(self, token: Token, what: str) -> bool:
        """Whether every number in the token is short enough; notes an error if not."""
        longest = max(len(part) for part in str(token).lower().replace("e", "x").split("x"))
        if longest <= MAX_LITERAL_DIGITS:
            return True
        self.errors.append(Diagnostic(self._token_span(token), f"{what} has more than {MAX_LITERAL_DIGITS} digits"))
        return False

    # expressions
    def int(self, meta, children):
        token = children[0]
        return ast.Literal(self._span(meta), int(token) if self._digits(token, "this integer") else 0)

    def float(self, meta, children):
        token = children[0]
        return ast.Literal(self._span(meta), float(token) if self._digits(token, "this number") else 0.0)

    def shape(self, meta, children):
        token = children[0]
        dims = tuple(int(d) for d in str(token).split("x")) if self._digits(token, "this shape") else (1, 1)
        return ast.Literal(self._span(meta), dims)

    def string(self, meta, children):
        return ast.Literal(self._span(meta), str(children[0])[1:-1])

    def true(self, meta, children):
        return ast.Literal(self._span(meta), True)

    def false(self, meta, children):
        return ast.Literal(self._span(meta), False)

    def name(self, meta, children):
        return ast.Name(self._span(meta), str(children[0]))

    def binary(self, meta, children):
        left, op, right = children
        return ast.Binary(self._span(meta), str(op), left, right)

    def neg(self, meta, children):
        return ast.Neg(self._span(meta), children[0])

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(self._span(meta), str(op), left, right)

    def conditional(self, meta, children):
        then, condition, otherwise = children
        return ast.Conditional(self._span(meta), then, condition, otherwise)

    def pair(self, meta, children):
        return ast.Pair(self._span(meta), children[0], children[1])

    def call(self, meta, children):
        func = str(children[0])[:-1]
        return ast.Call(self._span(meta), func, [c for c in children[1:] if c is not None])

    def kwarg(self, meta, children):
        return ast.Kwarg(self._span(meta), str(children[0]), children[-1])

    def path(self, meta, children):
        return ".".join(str(c) for c in children)

    def label(self, meta, children):
        return children[0]

    # layers
    def layer(self, meta, children):
        label, op, *args = children
        return ast.Layer(self._span(meta), label, str(op), self._token_span(op), [a for a in args if a is not None])

    def let(self, meta, children):
        return ast.Let(self._span(meta), str(children[0]), children[1])

    def from_(self, meta, children):
        return ast.From(self._span(meta), str(children[0]), self._token_span(children[0]))

    def layer_body(self, meta, children):
        return [c for c in children if c is not None]

    def formal(self, meta, children):
        return ast.Formal(self._span(meta), str(children[0]), children[1])

    def block_def(self, meta, children):
        override, name, *formals, body = children
        return ast.BlockDef(self._span(meta), str(name), [f for f in formals if f is not None], body,
                            override is not None)

    def block_alias(self, meta, children):
        override, name, target, *bindings = children
        return ast.BlockAlias(self._span(meta), str(name), str(target)[:-1], [b for b in bindings if b is not None],
                              override is not None)

    def case(self, meta, children):
        return ast.Case(self._span(meta), str(children[0]), children[1])

    def shortcut_def(self, meta, children):
        override, name, *rest = children
        formals = [c for c in rest if isinstance(c, ast.Formal)]
        cases = [c for c in rest if isinstance(c, ast.Case)]
        return ast.ShortcutDef(self._span(meta), str(name), formals, cases, override is not None)

    def param_decl(self, meta, children):
        return ast.ParamDecl(self._span(meta), str(children[0]), children[1])

    # networks
    def assign(self, meta, children):
        return ast.Kwarg(self._span(meta), str(children[0]), children[1])

    def extends(self, meta, children):
        path, *assigns = children
        return ast.Extends(self._span(meta), str(path)[1:-1], [a for a in assigns if a is not None])

    def input(self, meta, children):
        token = children[0]
        dims = tuple(int(d) for d in str(token).split("x")) if self._digits(token, "this shape") else (1, 1)
        return "input", ast.InputShape(self._span(meta), dims)

    def stem(self, meta, children):
        return "stem", ast.Section(self._span(meta), children[0])

    def head(self, meta, children):
        return "head", ast.Section(self._span(meta), children[0])

    def stage(self, meta, children):
        label, depth, width, *options = children
        return ast.Stage(self._span(meta), label, depth, width, [o for o in options if o is not None])

    def stage_body(self, meta, children):
        return [c for c in children if c is not None]

    def stages(self, meta, children):
        *options, items = [c for c in children if not isinstance(c, Token)]
        return "stages", ast.Stages(self._span(meta), [o for o in options if o is not None], items)

    def setting(self, meta, children):
        key, *args = children
        args = [a for a in args if a is not None]
        return ast.Setting(self._span(meta), str(key), [a for a in args if not isinstance(a, ast.Kwarg)],
                           [a for a in args if isinstance(a, ast.Kwarg)])

    def train(self, meta, children):
        return "train", ast.Train(self._span(meta), [c for c in children if c is not None])

    def net_body(self, meta, children):
        return children

    def network(self, meta, children):
        name, extends, body = children
        sections: dict[str, ast.Node] = {}
        repeated = []
        for key, section in body or []:
            if key in sections:
                repeated.append(section.span)
            sections.setdefault(key, section)
        return ast.Network(self._span(meta), str(name), extends, repeated=repeated, **sections)

    def start(self, meta, children):
        items = [c for c in children if c is not None and not isinstance(c, Tree)]
        span = self._span(meta) if not meta.empty else Span(self.file, 1, 1, 1, 1)
        return ast.Module(
            span,
            params=[i for i in items if isinstance(i, ast.ParamDecl)],
            blocks=[i for i in items if isinstance(i, (ast.BlockDef, ast.BlockAlias))],
            shortcuts=[i for i in items if isinstance(i, ast.ShortcutDef)],
            networks=[i for i in items if isinstance(i, ast.Network)],
        )
