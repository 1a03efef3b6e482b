"""Resolving a spec: the prelude, `extends` chains and params, into one `Program`."""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

from resdsl import ast, zoo
from resdsl.diagnostics import Diagnostic, Diagnostics, Note, SpecError
from resdsl.expr import MAX_MAGNITUDE, EvalError, Value, evaluate, names_in
from resdsl.limits import MAX_EXTENDS_DEPTH, MAX_LITERAL_DIGITS, WORKERS_PER_CPU, max_workers, shortened, usable_cpus
from resdsl.parser import NotASpec, parse
from resdsl.source import SourceFile, SourceMap, Span, UnreadableSpec, read_source_text


class UsageError(ValueError):
    """A bad value from the command line or the Python API (e.g. an undeclared param): exit status 2."""


@dataclass
class Program:
    """Everything the IR builder needs: one merged network and the names it can use."""

    network: ast.Network
    param_values: dict[str, Value]
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


def load(source: SourceFile, overrides: dict[str, Value], sources: SourceMap | None = None,
         given_as: str = "--set {name}") -> Program:
    """Parse `source` and everything it extends, bind params, and merge the network.

    `given_as` says how the user wrote an override, for messages (`--set n`, or `compile(..., n=...)`).
    """
    sources = sources or SourceMap()
    sources.add(prelude_source())
    diagnostics = Diagnostics(sources)
    chain = _extends_chain(source, sources, diagnostics)
    prelude = _prelude_module()

    blocks: dict[str, ast.BlockDef | ast.BlockAlias] = {b.name: b for b in prelude.blocks}
    shortcuts: dict[str, ast.ShortcutDef] = {s.name: s for s in prelude.shortcuts}
    decls: dict[str, ast.ParamDecl] = {}
    values: dict[str, ast.Expr | None] = {}
    network: ast.Network | None = None
    for module in chain:
        _define(module.blocks, blocks, diagnostics, "block")
        _define(module.shortcuts, shortcuts, diagnostics, "shortcut option")
        for decl in module.params:
            decls[decl.name] = decl
            values[decl.name] = decl.value
        child = module.networks[0]
        if child.extends:
            given: set[str] = set()
            for assign in child.extends.assigns:
                if assign.name in given:
                    diagnostics.error(assign.span, f"param '{assign.name}' is given twice in this extends; give it "
                                                   "once")
                given.add(assign.name)
                if assign.name not in decls:
                    declared = ", ".join(decls) or "none"
                    diagnostics.error(assign.span, f"'{child.extends.path}' declares no param '{assign.name}' "
                                                   f"(declared: {declared})")
                values[assign.name] = assign.value
        if network is None:
            for drop in child.stages.drops if child.stages else []:
                diagnostics.error(drop.span, f"`-{drop.name}` drops an inherited stage option, but this network "
                                             "extends no other")
        network = child if network is None else _merge(network, child, diagnostics)

    for name in overrides:
        if name not in decls:
            declared = ", ".join(decls) or "none"
            raise UsageError(f"{given_as.format(name=name)}: the spec declares no param '{name}' "
                             f"(declared: {declared})")
    param_values = _bind_params(decls, values, overrides, diagnostics)
    assert network is not None  # the chain holds at least the spec itself
    for span in network.repeated:
        diagnostics.error(span, "this section is given twice in the network")
    diagnostics.raise_if_any()
    return Program(network=network, param_values=param_values, blocks=blocks, shortcuts=shortcuts,
                   sources=sources, param_decls=decls)


def _extends_chain(source: SourceFile, sources: SourceMap, diagnostics: Diagnostics) -> list[ast.Module]:
    """The modules from the root ancestor down to `source`."""
    chain: list[ast.Module] = []
    seen = {str(Path(source.path).resolve()): source.path}  # each file of the chain, with the name shown for it
    extends: ast.Extends | None = None
    while True:
        try:
            module = parse(source, sources)
        except NotASpec:
            if extends is None:
                raise
            raise diagnostics.fail(extends.span, f"cannot extend '{extends.path}': {NotASpec.REASON}") from None
        if len(module.networks) != 1:
            message = ("no network in this file" if not module.networks
                       else f"one network per file; this file has {len(module.networks)}")
            span = module.networks[1].span if len(module.networks) > 1 else source.start()
            raise diagnostics.fail(span, message)
        chain.insert(0, module)
        extends = module.networks[0].extends
        if extends is None:
            return chain
        if not extends.path.strip():
            raise diagnostics.fail(extends.span, "`extends` needs a spec file or a zoo name, not an empty string")
        parent = _extends_target(source, extends.path)
        if str(parent) in seen:
            names = list(seen.values())
            cycle = " -> ".join([*names[names.index(seen[str(parent)]):], seen[str(parent)]])
            raise diagnostics.fail(extends.span, f"a cycle of extends: {cycle}")
        if len(seen) >= MAX_EXTENDS_DEPTH:
            raise diagnostics.fail(extends.span, f"the extends chain is more than {MAX_EXTENDS_DEPTH} files deep, "
                                                         "the limit; merge some of its files into one")
        seen[str(parent)] = _display_path(parent)
        try:
            text = read_source_text(parent)
        except UnreadableSpec as error:
            close = zoo.nearest(extends.path) if error.missing else None
            hint = f"; did you mean the zoo's '{close}'?" if close else ""
            raise diagnostics.fail(extends.span, f"cannot read '{extends.path}': {error}{hint}") from None
        source = SourceFile(path=_display_path(parent), text=text)


def _extends_target(source: SourceFile, target: str) -> Path:
    """The file `extends "target"` names: a path relative to the spec, else a zoo name (`resnet50`)."""
    base = Path.cwd() if source.path.startswith("<") else Path(source.path).parent
    try:
        path = (base / target).resolve()
        if path.exists():
            return path
    except (OSError, ValueError, RuntimeError):  # too long, a NUL, a symlink loop: reading it says so
        return base / target
    found = zoo.find(target)
    return found.resolve() if found else path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _define(items: list, table: dict, diagnostics: Diagnostics, kind: str) -> None:
    """Add a file's definitions; replacing a visible name needs `override`, and `override` needs a name to replace."""
    own: set[str] = set()
    for item in items:
        if item.name in own:
            diagnostics.error(item.span, f"{kind} '{item.name}' is defined twice in this file")
        elif item.name in table and not item.override:
            earlier = table[item.name].span
            where = "a built-in" if earlier.path == prelude_source().path else "already defined"
            diagnostics.error(item.span, f"{kind} '{item.name}' is {where}; write `override {_keyword(kind)} "
                                         f"{item.name}` to replace it", (Note(earlier, "defined here"),))
        elif item.override and item.name not in table:
            diagnostics.error(item.span, f"`override` of {kind} '{item.name}', but there is no {kind} of that "
                                         "name to replace")
        own.add(item.name)
        table[item.name] = item


def _keyword(kind: str) -> str:
    return kind.split()[0]


def _merge(parent: ast.Network, child: ast.Network, diagnostics: Diagnostics) -> ast.Network:
    """The child's sections replace the parent's; its stage options merge key by key (`-key` drops one)."""
    stages = parent.stages
    if child.stages is not None:
        inherited = {o.name: o for o in stages.options} if stages is not None else {}
        for drop in child.stages.drops:
            if drop.name not in inherited:
                given = ", ".join(inherited) or "none"
                diagnostics.error(drop.span, f"`-{drop.name}`: the parent gives no stage option '{drop.name}' "
                                             f"(it gives {given})")
            inherited.pop(drop.name, None)
        if stages is None:
            stages = replace(child.stages, drops=[])
        else:
            options = inherited | {o.name: o for o in child.stages.options}
            stages = replace(child.stages, options=list(options.values()), drops=[],
                             items=child.stages.items if child.stages.items is not None else stages.items)
    return replace(child, input=child.input or parent.input, stem=child.stem or parent.stem, stages=stages,
                   head=child.head or parent.head, train=child.train or parent.train,
                   repeated=parent.repeated + child.repeated)


def _bind_params(decls: dict[str, ast.ParamDecl], values: dict[str, ast.Expr | None],
                 overrides: dict[str, Value], diagnostics: Diagnostics) -> dict[str, Value]:
    """Each param's value, those it reads first (a child's `extends "p.res" (a = b)` may read its own `b`)."""
    reads: dict[str, list[str]] = {}
    for name in decls:
        value = values[name]
        reads[name] = [] if name in overrides or value is None else [o for o in names_in(value) if o in decls]
    waiting = {name: len(set(others)) for name, others in reads.items()}
    readers: dict[str, list[str]] = {name: [] for name in decls}
    for name, others in reads.items():
        for other in set(others):
            readers[other].append(name)
    ready = deque(name for name in decls if not waiting[name])
    env: dict[str, Value] = {}
    while ready:
        name = ready.popleft()
        value = values[name]
        if name in overrides:
            env[name] = overrides[name]
        elif value is None:
            diagnostics.error(decls[name].span, f"param '{name}' has no value; give one with --set {name}=VALUE")
        else:
            try:
                env[name] = evaluate(value, env)
            except EvalError as error:
                diagnostics.error(error.span, error.message)
        for reader in readers[name]:
            waiting[reader] -= 1
            if not waiting[reader]:
                ready.append(reader)
    for name in decls:
        value = values[name]
        if waiting[name] and value is not None:  # only a param with a value reads others
            diagnostics.error(value.span, f"param '{name}' depends on itself (through "
                                          f"{', '.join(o for o in dict.fromkeys(reads[name]) if waiting[o])})")
    return env


def check_override(name: str, value: object, given_as: str) -> Value:
    """A param value given from Python, checked as `--set` checks its text: an int, float, bool or shape."""
    where = given_as.format(name=name)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_LITERAL_DIGITS:
            raise UsageError(f"{where}: {value} has more than {MAX_LITERAL_DIGITS} digits, the limit for a number")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise UsageError(f"{where}: {value} is not a finite number within ±1e30")
        return value
    if isinstance(value, tuple) and len(value) > 1 and all(type(d) is int and 0 < d < 10**MAX_LITERAL_DIGITS
                                                          for d in value):
        return value
    shown = "None" if value is None else f"{value!r} ({type(value).__name__})"
    raise UsageError(f"{where}: {shown[:80]} is not a param value; give an int, a float, True/False or a shape "
                     "such as (3, 32, 32)")


SEED_MAX = 2**63 - 1  # what every consumer of a seed takes: torch's and numpy's generators, an int64 tensor


def check_seed(seed: object, name: str = "seed") -> int:
    """`seed` if torch's and numpy's generators take it (a whole number from 0 to SEED_MAX); else UsageError naming
    it as `name` (the CLI's `--seed`)."""
    whole = _whole_number(seed)
    if whole is not None and 0 <= whole <= SEED_MAX:
        return whole
    raise UsageError(f"{name} must be a whole number from 0 to 2**63-1 ({SEED_MAX}), not {shortened(repr(seed))}")


def check_workers(workers: object, name: str = "workers") -> int | None:
    """`workers` (decoding processes) if from 0 to limits.max_workers() or None; else UsageError naming it as
    `name` (the CLI's `--workers`)."""
    if workers is None:
        return None
    whole = _whole_number(workers)
    if whole is not None and 0 <= whole <= max_workers():
        return whole
    raise UsageError(f"{name} must be from 0 to {max_workers()} ({WORKERS_PER_CPU} x the {usable_cpus()} CPUs "
                     f"usable here), not {shortened(repr(workers))}")


def _whole_number(value: object) -> int | None:
    """`value` as an int if it is a whole number (an int or a numpy integer, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # pyright: ignore[reportArgumentType]
    except TypeError:
        return None


def parse_overrides(items: list[str] | None) -> dict[str, Value]:
    """The values of the `--set` flags given, each param at most once (UsageError for one given twice)."""
    overrides: dict[str, Value] = {}
    for item in items or []:
        name, value = parse_override(item)
        if name in overrides:
            raise UsageError(f"--set {name} is given twice; give each param once")
        overrides[name] = value
    return overrides


def parse_override(text: str) -> tuple[str, Value]:
    """`n=18` from `--set n=18`: an int, float, true/false or a shape like 3x32x32."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name.isidentifier() or not raw:
        raise UsageError(f"--set expects NAME=VALUE, got '{text[:60]}'")
    if raw in ("true", "false"):
        return name, raw == "true"
    if len(raw) > MAX_LITERAL_DIGITS * 4 or any(len(d) > MAX_LITERAL_DIGITS for d in raw.lstrip("-").split("x")):
        raise UsageError(f"--set {name}: the value has more than {MAX_LITERAL_DIGITS} digits, the limit for a number")
    if _INT.fullmatch(raw):
        return name, int(raw)
    if _FLOAT.fullmatch(raw):
        value = float(raw)
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            raise UsageError(f"--set {name}: '{raw}' is not a finite number within ±1e30")
        return name, value
    if _SHAPE.fullmatch(raw):
        return name, tuple(int(d) for d in raw.split("x"))
    raise UsageError(f"--set {name}: '{raw}' is not a number, true/false or a shape (as the language writes them: "
                     "18, 0.5, 1e-4, 3x32x32)")


# The language's literals (grammars/resdsl.lark), ASCII digits only: Python's int() would also take `1_000`.
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
_SHAPE = re.compile(r"[0-9]+(x[0-9]+)+")


def is_source_text(spec: str | Path) -> bool:
    """Whether read_spec reads `spec` as spec text: a blank string (not the folder Path("") means), or one with a
    newline or a brace that names no existing file (a file named `net{v2}.res` is still a file)."""
    return isinstance(spec, str) and (not spec.strip() or (("\n" in spec or "{" in spec) and not _exists(Path(spec))))


def read_spec(path_or_text: str | Path) -> SourceFile:
    """A spec from a path or a zoo name (`resnet50`), or from text when given a string that is clearly source."""
    if isinstance(path_or_text, str) and is_source_text(path_or_text):
        return SourceFile(path="<string>", text=path_or_text)
    path = Path(path_or_text)
    if isinstance(path_or_text, str) and not _exists(path):
        path = zoo.find(path_or_text) or path
    try:
        return SourceFile(path=str(path), text=read_source_text(path))
    except UnreadableSpec as error:
        if error.missing:
            close = zoo.nearest(str(path_or_text)) if isinstance(path_or_text, str) else None
            hint = f"; did you mean the zoo's '{close}'?" if close else ""
            raise SpecError([Diagnostic(None, f"no such file: {path}{hint}")]) from None
        raise SpecError([Diagnostic(Span(str(path), 1, 1, 1, 1), f"cannot read this spec: {error}")]) from None
