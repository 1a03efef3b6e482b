"""Text to AST: lark parses with `grammars/resdsl.lark`, a Transformer builds the models."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from resdsl import ast
from resdsl.diagnostics import Diagnostic, Note, SpecError
from resdsl.expr import MAX_MAGNITUDE
from resdsl.limits import MAX_LITERAL_DIGITS, MAX_NESTING_DEPTH, MAX_SPEC_BYTES
from resdsl.source import SourceFile, SourceMap, Span, spec_too_large


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


# Every token is kept, so that the AST builder can give each node its span itself: lark's
# `propagate_positions` would do it at more than twice the cost of the parse.
_OPTIONS = {"parser": "lalr", "keep_all_tokens": True, "maybe_placeholders": True,
            "start": ["start", "setting", "expr"]}


class _Parser:
    """The LALR parser with the AST builder as its callbacks; `parse` runs one parse at a time."""

    def __init__(self) -> None:
        self.builder = _ToAst()
        self.lark = _load_tables(self.builder)
        self.keywords = frozenset(t.pattern.value for t in self.lark.terminals
                                  if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier())
        self.lock = threading.Lock()

    def parse(self, source: SourceFile, start: str) -> tuple[object, list[Diagnostic]]:
        """What the rule `start` builds (an ast.Module, ast.Setting or expression; lark does not type it)."""
        with self.lock:
            self.builder.reset(source.path)
            return self.lark.parse(source.text, start=start), self.builder.errors


@cache
def _parser() -> _Parser:
    return _Parser()


def _load_tables(builder: _ToAst) -> Lark:
    """The parser, its tables kept in the user's cache by lark while the grammar is unchanged (saves ~0.3 s)."""
    grammar = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text()
    key = hashlib.sha256(f"{grammar}{_OPTIONS}".encode()).hexdigest()[:24]
    folder = _cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cache: str | bool = str(folder / f"parser-{key}.lark") if os.access(folder, os.W_OK) else False
    except OSError:  # no writable home: build the tables each time
        cache = False
    return Lark(grammar, transformer=builder, postlex=_JoinParenthesised(), cache=cache, **_OPTIONS)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resdsl"


def parse(source: SourceFile, sources: SourceMap) -> ast.Module:
    """Parse one file; a syntax error raises SpecError pointing at the bad token."""
    return cast(ast.Module, _parse(source, sources, "start"))


def parse_setting(source: SourceFile, sources: SourceMap) -> ast.Setting:
    """Parse one `train` setting line on its own (e.g. a command-line override such as `lr 0.05`)."""
    return cast(ast.Setting, _parse(source, sources, "setting"))


@cache
def parse_expression(text: str) -> ast.Expr | None:
    """One expression on its own (the `{i + 1}` of a name pattern such as `"b{i + 1}"`), or None if it is not one.

    Its spans point into the text itself; the caller reports errors at the string that holds it.
    """
    try:
        result, errors = _parser().parse(SourceFile(path="<pattern>", text=text), "expr")
    except UnexpectedInput:
        return None
    return None if errors else cast(ast.Expr, result)


def _parse(source: SourceFile, sources: SourceMap, start: str) -> object:
    sources.add(source)
    if len(source.text) > MAX_SPEC_BYTES:
        size = spec_too_large(f"{len(source.text):,} characters")
        raise SpecError([Diagnostic(source.start(), f"this spec is too large: {size}")], sources)
    try:
        result, errors = _parser().parse(source, start)
    except UnexpectedInput as error:
        if start == "start" and _not_a_spec(source, error):
            sources.forget(source.path)  # not a spec: nothing of it is quoted
            raise NotASpec(source) from None
        raise SpecError([_syntax_diagnostic(error, source, whole_file=start == "start")], sources) from None
    if errors:
        raise SpecError(errors, sources)
    return result


class NotASpec(SpecError):
    """A file whose very first word is not one a spec may start with: not a spec, and never quoted."""

    REASON = "it is not a resdsl spec (a spec starts with `network`, `block`, `shortcut`, `param` or `override`)"

    def __init__(self, source: SourceFile) -> None:
        self.path = source.path
        super().__init__([Diagnostic(Span(source.path, 1, 1, 1, 1), f"cannot read this file: {self.REASON}")])


def _not_a_spec(source: SourceFile, error: UnexpectedInput) -> bool:
    """Whether a file that failed to parse is some other file (notes, /etc/passwd), not a spec with a mistake.

    It is when its name is not `*.res` (nor text given to compile) and it fails at its very first word, which is
    no word of the language (`stem {` at the top of a file is a spec's mistake).
    """
    if source.path.endswith(".res") or source.path.startswith("<"):
        return False
    for number, text in enumerate(source.lines, start=1):
        stripped = text.lstrip()
        if stripped and not stripped.startswith("#"):
            first = re.match(r"[A-Za-z_]\w*", stripped)
            at_first = (error.line, error.column) == (number, len(text) - len(stripped) + 1)
            return at_first and (first is None or first.group() not in _parser().keywords)
    return False


_TOKEN_WORDS = {
    "_NEWLINE": "end of line", "SEMICOLON": "';'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "SHAPE": "a shape like 3x224x224",
    "STRING": "a quoted path", "CALL": "a call", "STAGES_CALL": "'stages'", "X": "'x'", "$END": "end of file",
    "MINUS": "'-'", "ADD_OP": "'+'", "MUL_OP": "'*'", "COMPARE": "a comparison", "DOT": "'.'",
    "OVERRIDE": "'override'", "FROM": "'from'", "WORD_PART": "a keyword as one part of a dotted label",
}


def _syntax_diagnostic(error: UnexpectedInput, source: SourceFile, whole_file: bool = True) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    notes: tuple[Note, ...] = ()
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END")
    if at_end:
        message = "unexpected end of file (a '}' may be missing)" if whole_file else "this setting ends too soon"
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
        message = _hint(found, error.expected, source.line(line), column) or \
            f"unexpected {shown}; expected {_join(expected)}"
        if "RBRACE" in error.expected and str(found) in _SECTION_WORDS and _first_on_its_line(source, line, column):
            notes = _unclosed_brace(source, before=(line, column))
    else:
        message = "syntax error"
    end = column + max(1, len(str(getattr(error, "token", "") or " ").strip() or " "))
    return Diagnostic(Span(source.path, line, column, line, end), message, notes)


# The language's keywords (grammars/resdsl.lark): where a name is expected they are read as keywords.
KEYWORDS = frozenset({"param", "block", "shortcut", "network", "extends", "input", "stem", "stages", "head", "train",
                      "same", "changed", "if", "else", "true", "false", "override", "from", "for", "in", "and",
                      "or", "not"})
_EXPRESSION_STARTS = frozenset({"INT", "FLOAT", "SHAPE", "NAME", "CALL"})


def _hint(found: Token, expected: set[str], text: str, column: int) -> str | None:
    """A message for a natural mistake, from the unexpected token and the text of its line around it."""
    before, after = text[: column - 1], text[column - 1 + len(str(found)):].lstrip()
    word = re.search(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*$", before)
    if str(found) in KEYWORDS and "NAME" in expected and after[:1] in ("=", ":"):
        return f"'{found}' is a keyword, so it cannot be used as a name here; rename it (e.g. '{found}_')"
    if word and word[1] in KEYWORDS and str(found) in ("=", ":", "("):
        return f"'{word[1]}' is a keyword, so it cannot be used as a name here; rename it (e.g. '{word[1]}_')"
    if found.type == "CALL" and "NAME" in expected and re.search(r"(^|[;{:])[ \t]*$", before):
        name = str(found)[:-1]
        return (f"a layer's arguments follow its name without parentheses: `{name} …`, not `{name}(…)` "
                f"(parentheses bind arguments in a value, as in `norm: {name}(…)`)")
    if found.type in _EXPRESSION_STARTS and "RPAR" in expected | {"RPAR"} and word and re.search(
            r"[(,][ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*:?[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]+$", before):
        return (f"a value with arguments is written as a call: `{word[1]}({found})`, not `{word[1]} {found}` "
                "(a stage option or argument holds one value)")
    return None


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


class _Path(str):
    """A label's dotted path, with where it is written; `parts` are its text and expressions when it has `{i}`."""

    span: Span
    parts: tuple = ()


class _Extent(Protocol):
    """Where a child of a rule starts and ends: a node's Span, or a token."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...
    @property
    def end_line(self) -> int: ...
    @property
    def end_column(self) -> int: ...


def _positioned(token: Token) -> _Extent:
    # lark types a token's positions optional, for a Token made by hand; its lexer sets them on every one it makes
    return cast(_Extent, token)


class _Body(list):
    """The statements, stages or sections between braces, with where the braces are."""

    span: Span


def _spanned(cls, items, span: Span):
    value = cls(items)
    value.span = span
    return value


class _ToAst:
    """Builds the AST while lark parses: one method per rule, called with the rule's children as they are reduced.

    Every token is kept (`keep_all_tokens`), so a node's span runs from its first token to its last, keywords
    and braces included, without lark's slower position propagation. Nothing is recursive, so that
    `1 + 1 + ...` thousands of terms long cannot overflow the stack. Oversized literals are noted (not
    raised) as errors. One parse at a time: `file` and `errors` are set for each.
    """

    def __init__(self) -> None:
        self.file = "<string>"
        self.errors: list[Diagnostic] = []
        # A parenthesised expression keeps its own span; what contains it starts or ends at the parenthesis.
        self.parenthesised: dict[int, Span] = {}
        # How deep `if` and `for` bodies nest inside each `if` and `for` node, by id (the later passes recurse).
        self.nesting: dict[int, int] = {}

    def reset(self, file: str) -> None:
        self.file, self.errors, self.parenthesised, self.nesting = file, [], {}, {}

    def _span(self, children: list) -> Span:
        first = next(filter(None, map(self._extent, children)), None)
        last = next(filter(None, map(self._extent, reversed(children))), None)
        if first is None or last is None:
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, first.line, first.column, last.end_line, last.end_column)

    def _extent(self, child) -> _Extent | None:
        """What a child covers: a token, or a node's span (with its parentheses)."""
        if isinstance(child, Token):
            return _positioned(child)
        if isinstance(child, tuple):  # ("stem", Section(...)) from a network's body
            child = child[1]
        return self.parenthesised.get(id(child)) or getattr(child, "span", None)

    def _token_span(self, token: Token) -> Span:
        extent = _positioned(token)
        return Span(self.file, extent.line, extent.column, extent.end_line, extent.end_column)

    def _digits(self, token: Token, what: str) -> bool:
        """Whether every number in the token is short enough; notes an error if not."""
        longest = max(len(part) for part in str(token).lower().replace("e", "x").split("x"))
        if longest <= MAX_LITERAL_DIGITS:
            return True
        message = f"{what} has more than {MAX_LITERAL_DIGITS} digits, the limit for a number in a spec"
        self.errors.append(Diagnostic(self._token_span(token), message))
        return False

    def _dims(self, token: Token) -> tuple[int, ...]:
        return tuple(int(d) for d in str(token).split("x")) if self._digits(token, "this shape") else (1, 1)

    # expressions
    def int(self, children):
        token = children[0]
        return ast.Literal(self._span(children), int(token) if self._digits(token, "this integer") else 0)

    def float(self, children):
        token = children[0]
        value = float(token) if self._digits(token, "this number") else 0.0
        if abs(value) > MAX_MAGNITUDE:
            self.errors.append(Diagnostic(self._token_span(token), "this number is beyond ±1e30, the limit for a "
                                                                   "number in a spec"))
            value = 0.0
        return ast.Literal(self._span(children), value)

    def shape(self, children):
        return ast.Literal(self._span(children), self._dims(children[0]))

    def string(self, children):
        return ast.Literal(self._span(children), str(children[0])[1:-1])

    def true(self, children):
        return ast.Literal(self._span(children), True)

    def false(self, children):
        return ast.Literal(self._span(children), False)

    def name(self, children):
        return ast.Name(self._span(children), str(children[0]))

    def atom(self, children):  # "(" expr ")"
        self.parenthesised[id(children[1])] = self._span(children)
        return children[1]

    def binary(self, children):
        left, op, right = children
        return ast.Binary(self._span(children), str(op), left, right)

    def neg(self, children):
        return ast.Neg(self._span(children), children[1])

    def compare(self, children):
        left, op, right = children
        return ast.Compare(self._span(children), str(op), left, right)

    def or_(self, children):
        left, right = _nodes(children)
        return ast.Logic(self._span(children), "or", left, right)

    def and_(self, children):
        left, right = _nodes(children)
        return ast.Logic(self._span(children), "and", left, right)

    def not_(self, children):
        return ast.Not(self._span(children), children[1])

    def conditional(self, children):
        then, condition, otherwise = _nodes(children)
        return ast.Conditional(self._span(children), then, condition, otherwise)

    def pair(self, children):
        key, value = _nodes(children)
        return ast.Pair(self._span(children), key, value)

    def call(self, children):
        return ast.Call(self._span(children), str(children[0])[:-1], _nodes(children))

    def kwarg(self, children):
        return ast.Kwarg(self._span(children), _word(children), _nodes(children)[-1])

    def path(self, children):
        parts: list[str | ast.Node] = []
        for child in children:
            if child is None:  # the optional name before `{`
                continue
            if isinstance(child, ast.Node):
                parts.append(child)
            elif str(child) not in "{}":
                if parts and isinstance(parts[-1], str):
                    parts[-1] += str(child)
                else:
                    parts.append(str(child))
        text = "".join(part if isinstance(part, str) else "{…}" for part in parts)
        path = _spanned(_Path, text, self._span(children))
        path.parts = tuple(parts) if any(isinstance(part, ast.Node) for part in parts) else ()
        return path

    def label(self, children):
        return children[0]

    # layers
    def layer(self, children):
        label = children[0]
        op = next(c for c in children if isinstance(c, Token) and c.type == "NAME")
        parts = label.parts if label is not None else ()
        return ast.Layer(self._span(children), label, str(op), self._token_span(op), _nodes(children), parts)

    def let(self, children):
        return ast.Let(self._span(children), _word(children), _nodes(children)[0])

    def from_(self, children):
        name = children[1]
        quoted = name.type == "STRING"
        return ast.From(self._span(children), str(name)[1:-1] if quoted else str(name), self._token_span(name),
                        quoted)

    def for_(self, children):
        iterable, = (c for c in children if isinstance(c, ast.Expr))
        return self._nested(ast.For(self._span(children), _word(children), iterable, children[-1]), children[-1])

    def if_(self, children):
        condition = children[1]
        bodies = [c for c in children[3:] if isinstance(c, _Body | ast.If)]  # children[2] is the first body
        otherwise = bodies[0] if bodies else []
        node = ast.If(self._span(children), condition, children[2], [otherwise] if isinstance(otherwise, ast.If)
                      else otherwise)
        return self._nested(node, [*node.then, *node.otherwise])

    def _nested(self, node: ast.For | ast.If, body: list) -> ast.For | ast.If:
        """`node` with its nesting depth noted; the one that first passes MAX_NESTING_DEPTH is an error."""
        depth = 1 + max((self.nesting.get(id(statement), 0) for statement in body), default=0)
        self.nesting[id(node)] = depth
        if depth == MAX_NESTING_DEPTH + 1:
            start, keyword = node.span, 3 if isinstance(node, ast.For) else 2
            chain = isinstance(node, ast.If) and len(node.otherwise) == 1 and isinstance(node.otherwise[0], ast.If)
            message = (f"this else-if chain has more than {MAX_NESTING_DEPTH} cases after here, the limit (each "
                       "`else if` nests one level); continue it in a block called from an `else`" if chain else
                       f"`if` and `for` are nested more than {MAX_NESTING_DEPTH} deep here, the limit; split the "
                       "body into blocks")
            self.errors.append(Diagnostic(Span(start.path, start.line, start.column, start.line,
                                               start.column + keyword), message))
        return node

    def layer_body(self, children):
        return _spanned(_Body, _nodes(children), self._span(children))

    def formal(self, children):
        default = _nodes(children)
        return ast.Formal(self._span(children), _word(children), default[0] if default else None)

    def block_def(self, children):
        formals = [c for c in children if isinstance(c, ast.Formal)]
        return ast.BlockDef(self._span(children), _word(children), formals, children[-1], _override(children))

    def block_alias(self, children):
        target = next(c for c in children if isinstance(c, Token) and c.type == "CALL")
        return ast.BlockAlias(self._span(children), _word(children), str(target)[:-1], _nodes(children),
                              _override(children))

    def case(self, children):
        return ast.Case(self._span(children), str(children[0]), children[1])

    def shortcut_def(self, children):
        nodes = _nodes(children)
        formals = [c for c in nodes if isinstance(c, ast.Formal)]
        cases = [c for c in nodes if isinstance(c, ast.Case)]
        return ast.ShortcutDef(self._span(children), _word(children), formals, cases, _override(children))

    def param_decl(self, children):
        value = _nodes(children)
        return ast.ParamDecl(self._span(children), _word(children), value[0] if value else None)

    # networks
    def assign(self, children):
        return ast.Kwarg(self._span(children), _word(children), _nodes(children)[0])

    def extends(self, children):
        return ast.Extends(self._span(children), str(children[1])[1:-1], _nodes(children))

    def input(self, children):
        return "input", ast.InputShape(self._span(children), self._dims(children[1]))

    def stem(self, children):
        return "stem", ast.Section(self._span(children), children[1])

    def head(self, children):
        return "head", ast.Section(self._span(children), children[1])

    def stage(self, children):
        label = children[0]
        exprs = [c for c in _nodes(children) if not isinstance(c, ast.Kwarg)]
        options = [c for c in children if isinstance(c, ast.Kwarg)]
        return ast.Stage(self._span(children), label, exprs[0], exprs[1] if len(exprs) > 1 else None, options)

    def stage_body(self, children):
        return _spanned(_Body, _nodes(children), self._span(children))

    def drop(self, children):
        return ast.Drop(self._span(children), _word(children))

    def stages(self, children):
        options = [c for c in children if isinstance(c, ast.Kwarg)]
        drops = [c for c in children if isinstance(c, ast.Drop)]
        return "stages", ast.Stages(self._span(children), options, _body(children), drops)

    def setting(self, children):
        args = _nodes(children)
        return ast.Setting(self._span(children), _word(children), [a for a in args if not isinstance(a, ast.Kwarg)],
                           [a for a in args if isinstance(a, ast.Kwarg)])

    def train(self, children):
        return "train", ast.Train(self._span(children), _nodes(children))

    def net_body(self, children):
        return _spanned(_Body, [c for c in children if isinstance(c, tuple)], self._span(children))

    def network(self, children):
        extends = next((c for c in children if isinstance(c, ast.Extends)), None)
        sections: dict[str, Any] = {}  # each section by its keyword: input, stem, stages, head, train
        repeated = []
        for key, section in _body(children) or []:
            if key in sections:
                repeated.append(section.span)
            sections.setdefault(key, section)
        return ast.Network(self._span(children), _word(children), extends, repeated=repeated, **sections)

    def start(self, children):
        items = _nodes(children)
        return ast.Module(
            self._span(children),
            params=[i for i in items if isinstance(i, ast.ParamDecl)],
            blocks=[i for i in items if isinstance(i, (ast.BlockDef, ast.BlockAlias))],
            shortcuts=[i for i in items if isinstance(i, ast.ShortcutDef)],
            networks=[i for i in items if isinstance(i, ast.Network)],
        )


def _nodes(children: list) -> list:
    """The children that are AST nodes (expressions, arguments, statements, definitions), in order."""
    return [c for c in children if isinstance(c, ast.Node)]


def _word(children: list) -> str:
    """The first NAME among the children: what a definition, argument or setting is called."""
    return str(next(c for c in children if isinstance(c, Token) and c.type == "NAME"))


def _body(children: list) -> _Body | None:
    """The braces' contents where a rule makes them optional (a network's, stages'); a required body is the last
    child."""
    return next((c for c in children if isinstance(c, _Body)), None)


def _override(children: list) -> bool:
    return any(isinstance(c, Token) and c.type == "OVERRIDE" for c in children)
