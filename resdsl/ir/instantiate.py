"""Lowering, the instantiate and bind steps: blocks and shortcut options as typed instances, arguments bound.

Pure functions of the program, used by resdsl.ir.build and resdsl.ir.emit; they hold no state.
`block plain_basic = basic(shortcut: none)` and a value such as `se(rd_ratio: 0.25)` both end as an
`Instance` of a definition with the arguments given so far; `bind_formals` then gives every formal
its value, positional arguments first, as a call would.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from resdsl import ast
from resdsl.expr import Argument, Callee, EvalError, Value, evaluate, evaluate_arguments
from resdsl.resolve import Program
from resdsl.source import Span


class BindError(Exception):
    """Arguments that do not fit a definition; `problems` are (span, message) pairs."""

    def __init__(self, problems: list[tuple[Span, str]]) -> None:
        super().__init__(problems[0][1] if problems else "reported already")
        self.problems = problems


Definition = TypeVar("Definition", ast.BlockDef, ast.ShortcutDef)


@dataclass(frozen=True)
class Instance(Generic[Definition]):
    """A block or shortcut option after following aliases: its definition, the name it was used by, and
    the arguments bound so far (by aliases, then by values)."""

    definition: Definition
    name: str
    arguments: tuple[Argument, ...] = ()
    shortcut: ShortcutInstance | None = None  # a shortcut option bound by a block alias (`plain_basic`)

    def with_arguments(self, arguments: tuple[Argument, ...]) -> Instance[Definition]:
        return Instance(self.definition, self.name, self.arguments + arguments, self.shortcut)


BlockInstance = Instance[ast.BlockDef]
ShortcutInstance = Instance[ast.ShortcutDef]


def block_instance(callee: Callee, program: Program, env: Mapping[str, Value], span: Span) -> BlockInstance:
    """The block a `Callee` names, through its aliases, with every argument bound so far."""
    name, alias_arguments, shortcut = callee.name, [], None
    seen: set[str] = set()
    while True:
        definition = program.blocks.get(name)
        if definition is None:
            raise BindError([(span, unknown("block", name, program.blocks))])
        if isinstance(definition, ast.BlockDef):
            return Instance(definition, callee.name, tuple(alias_arguments) + callee.arguments, shortcut)
        if name in seen:
            raise BindError([(span, f"block '{callee.name}' is an alias of itself")])
        seen.add(name)
        bound = []
        for binding in definition.bindings:
            if binding.name == "shortcut":
                shortcut = shortcut or shortcut_instance(binding.value, program, env)
            else:
                bound.append(Argument(binding.name, _evaluate(binding.value, env), binding.span))
        alias_arguments = bound + alias_arguments  # the outer alias's bindings come after the inner's
        name = definition.target


def shortcut_instance(expr: ast.Expr, program: Program, env: Mapping[str, Value]) -> ShortcutInstance:
    """The shortcut option `shortcut: B` or `shortcut: B(norm: none)` names."""
    if isinstance(expr, ast.Name):
        name, arguments = expr.id, ()
    elif isinstance(expr, ast.Call):
        name = expr.func
        try:
            arguments = tuple(evaluate_arguments(expr.args, env))
        except EvalError as error:
            raise BindError([(error.span, error.message)]) from None
    else:
        raise BindError([(expr.span, "shortcut expects an option name, e.g. A, B or B(norm: none) (known: "
                                     f"{', '.join(sorted(program.shortcuts))})")])
    definition = program.shortcuts.get(name)
    if definition is None:
        raise BindError([(expr.span, unknown("shortcut option", name, program.shortcuts))])
    return Instance(definition, name, arguments)


def bind_formals(definition: ast.BlockDef | ast.ShortcutDef, arguments: tuple[Argument, ...] | list[Argument],
                 env: ChainMap[str, Value], site: Span) -> dict[str, Value]:
    """Every formal's value: positional arguments in order, then keywords by name, then defaults."""
    kind = "block" if isinstance(definition, ast.BlockDef) else "shortcut option"
    formals = {f.name: f for f in definition.formals}
    if len(formals) < len(definition.formals):
        raise BindError([])  # a parameter named twice, reported at the definition: its calls cannot be bound
    given: dict[str, Value] = {}
    problems: list[tuple[Span, str]] = []
    order = iter(definition.formals)
    # positional arguments in order, the earlier bound first (`se(rd_ratio: 0.25)` then `attn 256`), as
    # functools.partial binds them; then keywords. Their written order was checked where they were written.
    for argument in [a for a in arguments if a.name is None] + [a for a in arguments if a.name is not None]:
        if argument.name is None:
            formal = next(order, None)
            if formal is None:
                problems.append((argument.span, f"{kind} '{definition.name}' takes {len(formals)} argument(s); "
                                                "this one is extra"))
                continue
            name = formal.name
        else:
            name = argument.name
            if name not in formals:
                problems.append((argument.span, f"{kind} '{definition.name}' has no parameter '{name}' "
                                                f"(it takes {', '.join(formals) or 'none'})"))
                continue
        if name in given:
            problems.append((argument.span, f"{kind} '{definition.name}': '{name}' is given twice"))
            continue
        given[name] = argument.value
    values: dict[str, Value] = {}
    scope = env.new_child(values)
    for formal in definition.formals:
        if formal.name in given:
            values[formal.name] = given[formal.name]
        elif formal.default is not None:
            try:
                values[formal.name] = evaluate(formal.default, scope)
            except EvalError as error:
                problems.append((error.span, error.message))
        else:
            problems.append((site, f"{kind} '{definition.name}' needs a value for '{formal.name}'"))
    if problems:
        raise BindError(problems)
    return values


def duplicate_formals(definition: ast.BlockDef | ast.ShortcutDef) -> list[tuple[Span, str]]:
    """Formals named twice: `block b(width, width)`."""
    seen: set[str] = set()
    problems = []
    for formal in definition.formals:
        if formal.name in seen:
            problems.append((formal.span, f"parameter '{formal.name}' is named twice in '{definition.name}'"))
        seen.add(formal.name)
    return problems


def unknown(kind: str, name: str, known: Collection[str]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known))})"
    return f"unknown {kind} '{name}'{hint}"


def _evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    try:
        return evaluate(expr, env)
    except EvalError as error:
        raise BindError([(error.span, error.message)]) from None
