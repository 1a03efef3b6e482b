"""What the language server knows about one open spec: the front end's diagnostics, AST, program and IR.

Positions here are the front end's: 1-based lines and columns (the server converts to LSP's 0-based ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from resdsl import ast, zoo
from resdsl.diagnostics import Diagnostic, SpecError
from resdsl.ir.ops import OPS, Op, Output
from resdsl.network import Network, check_program
from resdsl.parser import parse
from resdsl.resolve import Program, load, prelude_source
from resdsl.source import SourceFile, SourceMap, Span

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
Definition = ast.BlockDef | ast.BlockAlias | ast.ShortcutDef | ast.ParamDecl
KEYWORDS = ("network", "extends", "param", "block", "shortcut", "override", "input", "stem", "stages", "head",
            "train", "same", "changed", "from", "if", "else", "true", "false")


@dataclass
class Analysis:
    """One run of the front end over a document's text: whatever stage it reached, and the errors it found."""

    path: str
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    module: ast.Module | None = None  # the file's own AST, when it parses
    program: Program | None = None  # names resolved across `extends` and the prelude, when it resolves
    network: Network | None = None  # the checked IR, when every check passes


def analyse(path: str, text: str) -> Analysis:
    """Run the front end over `text` (the editor's buffer for the file at `path`)."""
    result = Analysis(path, text)
    source = SourceFile(path, text)
    try:
        result.module = parse(source, SourceMap())
        result.program = load(source, {})
        result.network = check_program(result.program)
    except SpecError as error:
        result.diagnostics = list(error.diagnostics)
    return result


def contains(span: Span, path: str, line: int, column: int) -> bool:
    """Whether (line, column) of `path` lies in `span` (its end column is exclusive)."""
    if not _same_file(span.path, path):
        return False
    return (span.line, span.column) <= (line, column) < (span.end_line, span.end_column)


def _same_file(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def word_at(text: str, line: int, column: int) -> tuple[str, int] | None:
    """The name under (line, column) and the column where it starts."""
    lines = text.split("\n")
    if not 0 < line <= len(lines):
        return None
    for match in _WORD.finditer(lines[line - 1]):
        if match.start() <= column - 1 <= match.end():
            return match.group(), match.start() + 1
    return None


# --- hover --------------------------------------------------------------------------------------------------


def hover(analysis: Analysis, line: int, column: int) -> str | None:
    """Markdown for the hover at (line, column): the layers' shapes and costs there, and the name's signature."""
    parts = [part for part in (_layers_at(analysis, line, column), _name_doc(analysis, line, column)) if part]
    return "\n\n---\n\n".join(parts) or None


def _layers_at(analysis: Analysis, line: int, column: int) -> str | None:
    if analysis.network is None:
        return None
    graph = analysis.network.graph
    nodes = [name for name, node in graph.nodes.items()
             if not isinstance(node.op, Output)]  # the output's span is the whole network
    written = [name for name in nodes if contains(graph.nodes[name].span, analysis.path, line, column)
               and graph.nodes[name].origin is None]
    if written:  # a layer written here, in the network's own sections
        return "\n".join(_layer_line(analysis.network, name) for name in written)
    called = [name for name in nodes if (origin := graph.nodes[name].origin) is not None
              and contains(origin, analysis.path, line, column)]
    if called:  # a stage line or a block call: its instances' totals
        return _totals(analysis.network, called)
    inside = [name for name in nodes if contains(graph.nodes[name].span, analysis.path, line, column)]
    if inside:  # a layer of a block defined in this file: each instance
        shown = [_layer_line(analysis.network, name) for name in inside[:8]]
        more = f"\n\n… and {len(inside) - 8} more instances" if len(inside) > 8 else ""
        return "\n".join(shown) + more
    return None


def _layer_line(network: Network, name: str) -> str:
    node = network.graph.nodes[name]
    return (f"`{name}`: {node.op} → {_shape(node.shape)}, "
            f"{node.meta.params:,} params, {node.meta.macs:,} MACs  ")


def _totals(network: Network, names: list[str]) -> str:
    nodes = [network.graph.nodes[name] for name in names]
    params = sum(node.meta.params for node in nodes)
    macs = sum(node.meta.macs for node in nodes)
    blocks = len({(node.scope.stage, node.scope.block) for node in nodes})
    return (f"{blocks} block{'s' if blocks != 1 else ''} → {_shape(nodes[-1].shape)}, "
            f"{params:,} params, {macs:,} MACs")


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(map(str, shape)) if shape else "?"


def _name_doc(analysis: Analysis, line: int, column: int) -> str | None:
    found = word_at(analysis.text, line, column)
    if found is None:
        return None
    name = found[0]
    definition = definition_of(analysis, name)
    if definition is not None and not isinstance(definition, ast.ParamDecl):
        return f"```resdsl\n{signature(definition)}\n```\n{doc_comment(definition.span)}".rstrip()
    if name in OPS:
        return f"```resdsl\n{op_signature(OPS[name])}\n```\n{OPS[name].doc.summary}"
    return None


def signature(definition: Definition) -> str:
    """The first line of a definition, as written: `block bottleneck(width, stride = 1, ...)`."""
    lines = _source_lines(definition.span.path)
    text = " ".join(line.strip() for line in lines[definition.span.line - 1:definition.span.end_line])
    depth = 0
    for index, char in enumerate(text):  # up to the body's `{` (outside the parameter list)
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "{" and depth == 0:
            return text[:index].rstrip()
    return text


def doc_comment(span: Span) -> str:
    """The comment lines just above a definition."""
    lines = _source_lines(span.path)
    comment: list[str] = []
    number = span.line - 1
    while number > 0 and lines[number - 1].lstrip().startswith("#"):
        comment.insert(0, lines[number - 1].lstrip()[1:].strip())
        number -= 1
    return " ".join(comment)


def _source_lines(path: str) -> list[str]:
    if _same_file(path, prelude_source().path):
        return prelude_source().lines
    try:
        return Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return []


def op_signature(op: Op) -> str:
    params = ", ".join(param.name if param.positional else f"{param.name} {param.kind}" for param in op.signature)
    return f"{op.name} {params}".rstrip()


# --- definitions --------------------------------------------------------------------------------------------


def definition_of(analysis: Analysis, name: str) -> Definition | None:
    """The block, shortcut option or param `name` means in this spec (its own, a parent's or the prelude's)."""
    program = analysis.program
    if program is not None:
        return program.blocks.get(name) or program.shortcuts.get(name) or program.param_decls.get(name)
    module = analysis.module or _prelude()
    for definition in (*module.blocks, *module.shortcuts, *module.params, *_prelude().blocks, *_prelude().shortcuts):
        if definition.name == name:
            return definition
    return None


def _prelude() -> ast.Module:
    return parse(prelude_source(), SourceMap())


def extends_target(analysis: Analysis, line: int, column: int) -> Path | None:
    """The file that the `extends "..."` under (line, column) names."""
    module = analysis.module
    if module is None or not module.networks or module.networks[0].extends is None:
        return None
    extends = module.networks[0].extends
    if not contains(extends.span, analysis.path, line, column):
        return None
    local = Path(analysis.path).parent / extends.path
    return local.resolve() if local.is_file() else zoo.find(extends.path)


# --- completion ---------------------------------------------------------------------------------------------

_VALUE_OF = re.compile(r"\b(block|shortcut|attn|norm|act|gate)\s*:\s*\w*$")
_IN_EXTENDS = re.compile(r'\bextends\s+"[^"]*$')


def completions(analysis: Analysis, line: int, column: int) -> list[tuple[str, str]]:
    """(name, kind) pairs for completing at (line, column); kind is "op", "block", "shortcut", "param",
    "keyword" or "file"."""
    lines = analysis.text.split("\n")
    before = lines[line - 1][:column - 1] if 0 < line <= len(lines) else ""
    if _IN_EXTENDS.search(before):
        return [(name, "file") for name in zoo.names()]
    blocks, shortcuts, params = _names(analysis)
    value = _VALUE_OF.search(before)
    if value is not None:
        kind = value.group(1)
        if kind == "block":
            return [(name, "block") for name in blocks]
        if kind == "shortcut":
            return [(name, "shortcut") for name in shortcuts]
        if kind == "attn":
            return [("none", "keyword"), *((name, "block") for name in blocks)]
        module = "norm" if kind == "norm" else "activation"
        return [("none", "keyword"), *((name, "op") for name, op in OPS.items()
                                       if type(op).__module__.endswith(f".{module}"))]
    return [*((name, "op") for name, op in OPS.items() if not op.internal), *((name, "block") for name in blocks),
            *((name, "param") for name in params), *((word, "keyword") for word in KEYWORDS)]


def _names(analysis: Analysis) -> tuple[list[str], list[str], list[str]]:
    if analysis.program is not None:
        return list(analysis.program.blocks), list(analysis.program.shortcuts), list(analysis.program.param_decls)
    modules = [_prelude(), *([analysis.module] if analysis.module else [])]
    return ([b.name for m in modules for b in m.blocks], [s.name for m in modules for s in m.shortcuts],
            [p.name for m in modules for p in m.params])


# --- outline ------------------------------------------------------------------------------------------------


@dataclass
class Symbol:
    """One entry of the document's outline."""

    name: str
    kind: str  # "network", "section", "stage", "block", "shortcut", "param"
    span: Span
    children: list[Symbol] = field(default_factory=list)


def outline(module: ast.Module) -> list[Symbol]:
    """The network (its input, stem, stages, head and train sections), blocks, shortcut options and params."""
    symbols = [Symbol(decl.name, "param", decl.span) for decl in module.params]
    symbols += [Symbol(block.name, "block", block.span) for block in module.blocks]
    symbols += [Symbol(option.name, "shortcut", option.span) for option in module.shortcuts]
    for network in module.networks:
        sections = [Symbol(name, "section", section.span) for name in ("input", "stem", "stages", "head", "train")
                    if (section := getattr(network, name)) is not None]
        for section in sections:
            if section.name == "stages" and network.stages is not None and network.stages.items:
                section.children = [Symbol(stage.label or f"stage {index}", "stage", stage.span)
                                    for index, stage in enumerate(network.stages.items)]
        symbols.append(Symbol(network.name, "network", network.span, sections))
    return sorted(symbols, key=lambda symbol: (symbol.span.line, symbol.span.column))
