"""Resolving a spec: the prelude, `extends` chains and params, into one `Program`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from resdsl import ast
from resdsl.diagnostics import Reporter, SpecError
from resdsl.expr import EvalError, Value, evaluate
from resdsl.parser import parse
from resdsl.source import MAX_SPEC_BYTES, SourceFile, SourceMap, Span

MAX_EXTENDS_DEPTH = 16


class UsageError(Exception):
    """A bad command-line value (e.g. `--set` of an undeclared param): exit status 2."""


@dataclass
class Program:
    """Everything the IR builder needs: one merged network and the names it can use."""

    network: ast.Network
    params: dict[str, Value]
    blocks: dict[str, ast.BlockDef | ast.BlockAlias]
    shortcuts: dict[str, ast.ShortcutDef]
    sources: SourceMap
    param_decls: dict[str, ast.ParamDecl] = field(default_factory=dict)


@cache
def prelude_source() -> SourceFile:
    path = resources.files("resdsl.grammars").joinpath("prelude.res")
    return SourceFile(path=str(path), text=path.read_text())


@cache
def _prelude_module() -> ast.Module:
    return parse(prelude_source(), SourceMap())


def load(source: SourceFile, overrides: dict[str, Value], sources: SourceMap | None = None) -> Program:
    """Parse `source` and everything it extends, bind params, and merge the network."""
    sources = sources or SourceMap()
    sources.add(prelude_source())
    reporter = Reporter(sources)
    chain = _extends_chain(source, sources, reporter)
    prelude = _prelude_module()

    blocks: dict[str, ast.BlockDef | ast.BlockAlias] = {b.name: b for b in prelude.blocks}
    shortcuts: dict[str, ast.ShortcutDef] = {s.name: s for s in prelude.shortcuts}
    decls: dict[str, ast.ParamDecl] = {}
    values: dict[str, ast.Expr | None] = {}
    network: ast.Network | None = None
    for module in chain:
        _define(module.blocks, blocks, reporter, "block")
        _define(module.shortcuts, shortcuts, reporter, "shortcut")
        for decl in module.params:
            decls[decl.name] = decl
            values[decl.name] = decl.value
        child = module.networks[0]
        if child.extends:
            for assign in child.extends.assigns:
                if assign.name not in decls:
                    declared = ", ".join(decls) or "none"
                    reporter.error(assign.span, f"'{child.extends.path}' declares no param '{assign.name}' "
                                                f"(declared: {declared})")
                values[assign.name] = assign.value
        network = child if network is None else _merge(network, child)

    for name in overrides:
        if name not in decls:
            declared = ", ".join(decls) or "none"
            raise UsageError(f"--set {name}: the spec declares no param '{name}' (declared: {declared})")
    params = _bind_params(decls, values, overrides, reporter)
    for span in network.repeated:
        reporter.error(span, "this section is given twice in the network")
    reporter.raise_if_any()
    return Program(network=network, params=params, blocks=blocks, shortcuts=shortcuts,
                   sources=sources, param_decls=decls)


def _extends_chain(source: SourceFile, sources: SourceMap, reporter: Reporter) -> list[ast.Module]:
    """The modules from the root ancestor down to `source`."""
    chain: list[ast.Module] = []
    seen = {str(Path(source.path).resolve())}
    while True:
        module = parse(source, sources)
        if len(module.networks) != 1:
            message = ("no network in this file" if not module.networks
                       else f"one network per file; this file has {len(module.networks)}")
            first_line = Span(path=source.path, line=1, column=1, end_line=1,
                              end_column=len(source.line(1)) + 1)
            span = module.networks[1].span if len(module.networks) > 1 else first_line
            raise reporter.fail(span, message)
        chain.insert(0, module)
        extends = module.networks[0].extends
        if extends is None:
            return chain
        base = Path.cwd() if source.path.startswith("<") else Path(source.path).parent
        parent = (base / extends.path).resolve()
        if str(parent) in seen or len(seen) > MAX_EXTENDS_DEPTH:
            raise reporter.fail(extends.span, f"'{extends.path}' extends itself (a cycle of extends)")
        seen.add(str(parent))
        try:
            text = _read_text(parent)
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise reporter.fail(extends.span, f"cannot read '{extends.path}': {reason}") from None
        source = SourceFile(path=_display_path(parent), text=text)


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _define(items: list, table: dict, reporter: Reporter, kind: str) -> None:
    own: set[str] = set()
    for item in items:
        if item.name in own:
            reporter.error(item.span, f"{kind} '{item.name}' is defined twice in this file")
        own.add(item.name)
        table[item.name] = item


def _merge(parent: ast.Network, child: ast.Network) -> ast.Network:
    """The child's sections replace the parent's; its stage options merge key by key."""
    stages = parent.stages
    if child.stages is not None:
        if stages is None:
            stages = child.stages
        else:
            options = {o.name: o for o in stages.options} | {o.name: o for o in child.stages.options}
            stages = child.stages.model_copy(update={
                "options": list(options.values()),
                "items": child.stages.items if child.stages.items is not None else stages.items,
            })
    return child.model_copy(update={
        "input": child.input or parent.input,
        "stem": child.stem or parent.stem,
        "stages": stages,
        "head": child.head or parent.head,
        "train": child.train or parent.train,
        "repeated": parent.repeated + child.repeated,
    })


def _bind_params(decls: dict[str, ast.ParamDecl], values: dict[str, ast.Expr | None],
                 overrides: dict[str, Value], reporter: Reporter) -> dict[str, Value]:
    env: dict[str, Value] = {}
    for name, decl in decls.items():
        if name in overrides:
            env[name] = overrides[name]
            continue
        expr = values[name]
        if expr is None:
            reporter.error(decl.span, f"param '{name}' has no value; give one with --set {name}=VALUE")
            continue
        try:
            env[name] = evaluate(expr, env)
        except EvalError as error:
            reporter.error(error.span, error.message)
    return env


def parse_override(text: str) -> tuple[str, Value]:
    """`n=18` from `--set n=18`: an int, float, true/false or a shape like 3x32x32."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name.isidentifier() or not raw:
        raise UsageError(f"--set expects NAME=VALUE, got '{text}'")
    if raw in ("true", "false"):
        return name, raw == "true"
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    dims = raw.split("x")
    if len(dims) > 1 and all(d.isdigit() for d in dims):
        return name, tuple(int(d) for d in dims)
    raise UsageError(f"--set {name}: '{raw}' is not a number, true/false or a shape")


def read_spec(path_or_text: str | Path) -> SourceFile:
    """A spec from a path, or from text when given a string that is clearly source."""
    if isinstance(path_or_text, str) and ("\n" in path_or_text or "{" in path_or_text):
        return SourceFile(path="<string>", text=path_or_text)
    path = Path(path_or_text)
    try:
        return SourceFile(path=str(path), text=_read_text(path))
    except FileNotFoundError:
        raise SpecError([_no_file(f"no such file: {path}")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([_no_file(f"cannot read {path}: {error}")]) from None


def _read_text(path: Path) -> str:
    """The file's text, read no further than one byte past the size limit (so /dev/zero cannot hang us)."""
    with path.open("rb") as handle:
        return handle.read(MAX_SPEC_BYTES + 1).decode()


def _no_file(message: str):
    from resdsl.diagnostics import Diagnostic

    return Diagnostic(None, message)
