"""Text to AST: lark parses with `grammars/resdsl.lark`, a Transformer builds the models."""

from __future__ import annotations

from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from resdsl import ast
from resdsl.diagnostics import Diagnostic, Note, SpecError
from resdsl.source import MAX_SPEC_BYTES, SourceFile, SourceMap, Span


@cache
def _parser() -> Lark:
    grammar = resources.files("resdsl.grammars").joinpath("resdsl.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(source: SourceFile, sources: SourceMap) -> ast.Module:
    """Parse one file; a syntax error raises SpecError pointing at the bad token."""
    sources.add(source)
    if len(source.text.encode()) > MAX_SPEC_BYTES:
        span = Span(path=source.path, line=1, column=1, end_line=1, end_column=1)
        raise SpecError([Diagnostic(span, f"spec is larger than {MAX_SPEC_BYTES:,} bytes")], sources)
    try:
        tree = _parser().parse(source.text)
    except UnexpectedInput as error:
        raise SpecError([_syntax_diagnostic(error, source)], sources) from None
    return _ToAst(source.path).transform(tree)


_TOKEN_WORDS = {
    "_NEWLINE": "end of line", "SEMICOLON": "';'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "SHAPE": "a shape like 3x224x224",
    "STRING": "a quoted path", "CALL": "a call", "X": "'x'", "$END": "end of file",
    "MINUS": "'-'", "ADD_OP": "'+'", "MUL_OP": "'*'", "COMPARE": "a comparison",
}


def _syntax_diagnostic(error: UnexpectedInput, source: SourceFile) -> Diagnostic:
    line, column = max(error.line, 1), max(error.column, 1)
    notes: tuple[Note, ...] = ()
    at_end = isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END")
    if at_end:
        message = "unexpected end of file (a '}' may be missing)"
        lines = source.text.splitlines() or [""]
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
    span = Span(path=source.path, line=line, column=column, end_line=line, end_column=end)
    return Diagnostic(span, message, notes)


# Words that start a section or a definition: met where a '}' could go, the block before lacks one.
_SECTION_WORDS = frozenset({"stem", "stages", "head", "train", "network", "block", "shortcut", "param"})


def _first_on_its_line(source: SourceFile, line: int, column: int) -> bool:
    lines = source.text.splitlines()
    return line <= len(lines) and not lines[line - 1][: column - 1].strip()


def _unclosed_brace(source: SourceFile, before: tuple[int, int] | None = None) -> tuple[Note, ...]:
    """A note at the '{' most likely left open (before a position, if given), skipping comments and strings.

    A '}' that starts its line closes the '{' opened on a line of the same indentation; any '{' opened
    after that one and still open is the one missing its '}'.
    """
    open_braces: list[tuple[int, int, int]] = []  # line, column, indentation of the line
    skipped: list[tuple[int, int, int]] = []
    for number, text in enumerate(source.text.splitlines(), start=1):
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
    span = Span(path=source.path, line=line, column=column, end_line=line, end_column=column + 1)
    return (Note(span, "this '{' is not closed"),)


def _join(words: list[str]) -> str:
    if len(words) > 6:
        return ", ".join(words[:6]) + ", ..."
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Parse tree to AST models; purely structural, no semantic checks here.

    Non-recursive, so that `1 + 1 + ...` thousands of terms long cannot overflow the stack.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _span(self, meta) -> Span:
        return Span(path=self.path, line=meta.line, column=meta.column,
                    end_line=meta.end_line, end_column=meta.end_column)

    def _token_span(self, token: Token) -> Span:
        return Span(path=self.path, line=token.line, column=token.column,
                    end_line=token.end_line, end_column=token.end_column)

    # expressions
    def int(self, meta, children):
        return ast.Literal(span=self._span(meta), value=int(children[0]))

    def float(self, meta, children):
        return ast.Literal(span=self._span(meta), value=float(children[0]))

    def shape(self, meta, children):
        dims = tuple(int(d) for d in str(children[0]).split("x"))
        return ast.Literal(span=self._span(meta), value=dims)

    def string(self, meta, children):
        return ast.Literal(span=self._span(meta), value=str(children[0])[1:-1])

    def true(self, meta, children):
        return ast.Literal(span=self._span(meta), value=True)

    def false(self, meta, children):
        return ast.Literal(span=self._span(meta), value=False)

    def name(self, meta, children):
        return ast.Name(span=self._span(meta), id=str(children[0]))

    def binary(self, meta, children):
        left, op, right = children
        return ast.Binary(span=self._span(meta), op=str(op), left=left, right=right)

    def neg(self, meta, children):
        return ast.Neg(span=self._span(meta), operand=children[0])

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(span=self._span(meta), op=str(op), left=left, right=right)

    def conditional(self, meta, children):
        then, condition, otherwise = children
        return ast.Conditional(span=self._span(meta), then=then, condition=condition, otherwise=otherwise)

    def pair(self, meta, children):
        return ast.Pair(span=self._span(meta), key=children[0], value=children[1])

    def call(self, meta, children):
        func = str(children[0])[:-1]
        return ast.Call(span=self._span(meta), func=func, args=[c for c in children[1:] if c is not None])

    def kwarg(self, meta, children):
        return ast.Kwarg(span=self._span(meta), name=str(children[0]), value=children[-1])

    def label(self, meta, children):
        return str(children[0])

    # layers
    def layer(self, meta, children):
        label, op, *args = children
        op_token = op
        args = [a for a in args if a is not None]
        return ast.Layer(
            span=self._span(meta), label=label, op=str(op), op_span=self._token_span(op_token),
            args=[a for a in args if not isinstance(a, ast.Kwarg)],
            kwargs=[a for a in args if isinstance(a, ast.Kwarg)],
        )

    def let(self, meta, children):
        return ast.Let(span=self._span(meta), name=str(children[0]), value=children[1])

    def layer_body(self, meta, children):
        return [c for c in children if c is not None]

    def formal(self, meta, children):
        return ast.Formal(span=self._span(meta), name=str(children[0]), default=children[1])

    def block_def(self, meta, children):
        name, *formals, body = children
        return ast.BlockDef(span=self._span(meta), name=str(name),
                            formals=[f for f in formals if f is not None], body=body)

    def block_alias(self, meta, children):
        name, target, *bindings = children
        return ast.BlockAlias(span=self._span(meta), name=str(name), target=str(target)[:-1],
                              bindings=[b for b in bindings if b is not None])

    def case(self, meta, children):
        return str(children[0]), children[1]

    def shortcut_def(self, meta, children):
        name, *cases = children
        found = dict(cases)
        return ast.ShortcutDef(span=self._span(meta), name=str(name),
                               same=found.get("same"), changed=found.get("changed"))

    def param_decl(self, meta, children):
        return ast.ParamDecl(span=self._span(meta), name=str(children[0]), value=children[1])

    # networks
    def assign(self, meta, children):
        return ast.Kwarg(span=self._span(meta), name=str(children[0]), value=children[1])

    def extends(self, meta, children):
        path, *assigns = children
        return ast.Extends(span=self._span(meta), path=str(path)[1:-1],
                           assigns=[a for a in assigns if a is not None])

    def input(self, meta, children):
        dims = tuple(int(d) for d in str(children[0]).split("x"))
        return "input", ast.InputShape(span=self._span(meta), dims=dims)

    def stem(self, meta, children):
        return "stem", ast.Section(span=self._span(meta), layers=children[0])

    def head(self, meta, children):
        return "head", ast.Section(span=self._span(meta), layers=children[0])

    def stage(self, meta, children):
        label, depth, width, *options = children
        return ast.Stage(span=self._span(meta), label=label, depth=depth, width=width,
                         options=[o for o in options if o is not None])

    def stage_body(self, meta, children):
        return [c for c in children if c is not None]

    def stages(self, meta, children):
        *options, items = [c for c in children if not isinstance(c, Token)]
        return "stages", ast.Stages(span=self._span(meta), options=[o for o in options if o is not None],
                                    items=items)

    def setting(self, meta, children):
        key, *args = children
        args = [a for a in args if a is not None]
        return ast.Setting(span=self._span(meta), key=str(key),
                           args=[a for a in args if not isinstance(a, ast.Kwarg)],
                           kwargs=[a for a in args if isinstance(a, ast.Kwarg)])

    def train(self, meta, children):
        return "train", ast.Train(span=self._span(meta), settings=[c for c in children if c is not None])

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
        return ast.Network(span=self._span(meta), name=str(name), extends=extends,
                           repeated=repeated, **sections)

    def start(self, meta, children):
        items = [c for c in children if c is not None and not isinstance(c, Tree)]
        span = self._span(meta) if not meta.empty else Span(path=self.path, line=1, column=1,
                                                            end_line=1, end_column=1)
        return ast.Module(
            span=span,
            params=[i for i in items if isinstance(i, ast.ParamDecl)],
            blocks=[i for i in items if isinstance(i, (ast.BlockDef, ast.BlockAlias))],
            shortcuts=[i for i in items if isinstance(i, ast.ShortcutDef)],
            networks=[i for i in items if isinstance(i, ast.Network)],
        )
