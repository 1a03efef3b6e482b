"""Evaluating expressions: arithmetic on params, ops and blocks as values, tensors by name; errors at their span."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal as Kind

from resdsl import ast
from resdsl.limits import MAX_EXPRESSION_DEPTH
from resdsl.source import Span

MAX_MAGNITUDE = 10**30  # results beyond this are refused: no width or count is ever near it


@dataclass(frozen=True)
class Argument:
    """One argument bound to a callee: positional when `name` is None."""

    name: str | None
    value: Value
    span: Span


@dataclass(frozen=True)
class Callee:
    """An op, block or shortcut option used as a value, with the arguments bound so far.

    `norm = batchnorm` binds none; `groupnorm(32)` and `se(rd_ratio: 0.25)` bind some, and the layer
    that applies the value (`bn1: norm`) adds its own after them.
    """

    kind: Kind["op", "block", "shortcut"]
    name: str
    arguments: tuple[Argument, ...] = ()
    span: Span | None = field(default=None, compare=False)  # where arguments were bound (`groupnorm(eps: 1e-3)`)

    def bind(self, arguments: list[Argument], span: Span | None = None) -> Callee:
        return Callee(self.kind, self.name, self.arguments + tuple(arguments), span or self.span)


@dataclass(frozen=True)
class Tensor:
    """A tensor of the graph named in a block: a layer's label, `input`, or a name given to `from`."""

    node: str


class NoLayer:
    """`none` as a value: applying it adds no layer (`attn = none`, `norm: none`)."""

    def __repr__(self) -> str:
        return "none"


NONE = NoLayer()

Value = int | float | bool | str | tuple[int, ...] | Callee | Tensor | NoLayer


class EvalError(Exception):
    """An expression cannot be evaluated; `span` is the sub-expression at fault."""

    def __init__(self, span: Span, message: str) -> None:
        super().__init__(message)
        self.span = span
        self.message = message


_COMPARE: dict[str, Callable[[Value, Value], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def make_divisible(value: float, divisor: int, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's and torchvision's channel rounding: the nearest multiple of `divisor`, not more than 10% down."""
    least = divisor if min_value is None else min_value
    rounded = max(least, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


@dataclass(frozen=True)
class Builtin:
    """A function of the language: the number of values it takes, and what it computes."""

    least: int
    most: int
    compute: Callable[..., int | float]
    doc: str
    refuse: Callable[[list[int | float]], str | None] = lambda values: None  # why these values are outside its domain


BUILTINS: dict[str, Builtin] = {
    "min": Builtin(2, 64, min, "the smallest of two or more numbers"),
    "max": Builtin(2, 64, max, "the largest of two or more numbers"),
    "floor": Builtin(1, 1, math.floor, "rounds down to an integer"),
    "ceil": Builtin(1, 1, math.ceil, "rounds up to an integer"),
    "round": Builtin(1, 1, round, "rounds to the nearest integer, halves to even (as Python's round)"),
    "log2": Builtin(1, 1, math.log2, "the base-2 logarithm of a positive number",
                    lambda values: None if values[0] > 0 else f"needs a positive number, got {describe(values[0])}"),
    "make_divisible": Builtin(2, 4, make_divisible,
                              "make_divisible(v, divisor, min_value = divisor, round_limit = 0.9), as timm rounds "
                              "channel counts",
                              lambda values: None if isinstance(values[1], int) and values[1] > 0
                              else f"needs a positive integer divisor, got {describe(values[1])}"),
}


def names_in(expr: ast.Expr) -> list[str]:
    """The names `expr` reads, in the order written (without recursion: expressions may nest deep)."""
    names, stack = [], [expr]
    while stack:
        node = stack.pop()
        match node:
            case ast.Name(id=name):
                names.append(name)
            case ast.Binary(left=left, right=right) | ast.Compare(left=left, right=right) | ast.Logic(
                    left=left, right=right):
                stack += [right, left]
            case ast.Neg(operand=operand) | ast.Not(operand=operand):
                stack.append(operand)
            case ast.Conditional(then=then, condition=condition, otherwise=otherwise):
                stack += [otherwise, condition, then]
            case ast.Pair(value=value):
                stack.append(value)
            case ast.Call(args=args):
                stack += reversed(args)
    return names


def evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    """The value of `expr` with names looked up in `env`."""
    return _evaluate(expr, env, 0)


def _evaluate(expr: ast.Expr, env: Mapping[str, Value], depth: int) -> Value:
    if depth > MAX_EXPRESSION_DEPTH:
        raise EvalError(expr.span, f"expression is nested more than {MAX_EXPRESSION_DEPTH} deep, the limit; "
                                          "name parts of it (`param`s, or `name = ...` in a block)")
    match expr:
        case ast.Literal(value=value):
            return value
        case ast.Name(id=name):
            if name not in env:
                raise EvalError(expr.span, _unknown_name(name, env))
            return env[name]
        case ast.Neg(operand=operand):
            return -_number(operand, env, depth + 1)
        case ast.Binary():
            # a long sum is a deep left spine: walk it with a loop, not with recursion
            spine: list[ast.Binary] = []
            node: ast.Expr = expr
            while isinstance(node, ast.Binary):
                spine.append(node)
                node = node.left
            result = _number(node, env, depth + 1)
            for binary in reversed(spine):
                result = _arithmetic(binary, result, _number(binary.right, env, depth + 1))
            return result
        case ast.Compare(op=op, left=left, right=right):
            a, b = _evaluate(left, env, depth + 1), _evaluate(right, env, depth + 1)
            try:
                return _COMPARE[op](a, b)
            except TypeError:
                raise EvalError(expr.span, f"cannot compare {describe(a)} with {describe(b)}") from None
        case ast.Logic(op=op, left=left, right=right):
            first = _boolean(left, env, depth + 1, op)
            if first == (op == "or"):  # `true or x`, `false and x`: decided without x
                return first
            return _boolean(right, env, depth + 1, op)
        case ast.Not(operand=operand):
            return not _boolean(operand, env, depth + 1, "not")
        case ast.Conditional():
            node = expr
            while isinstance(node, ast.Conditional):  # `a if c else b if d else e`, any length
                condition = _evaluate(node.condition, env, depth + 1)
                if not isinstance(condition, bool):
                    raise EvalError(node.condition.span, f"the condition of `if` must be true or false (a "
                                                         f"comparison), not {describe(condition)}")
                if condition:
                    return _evaluate(node.then, env, depth + 1)
                node = node.otherwise
            return _evaluate(node, env, depth + 1)
        case ast.Call(func=func, args=args) if func in BUILTINS:
            return _builtin(expr, BUILTINS[func], [_plain(a, func, env, depth) for a in args])
        case ast.Call(func=func, args=args):
            callee = env.get(func)
            if not isinstance(callee, Callee):
                raise EvalError(expr.span, f"unknown function '{func}' (a space is needed before '(' to pass a "
                                           "value in parentheses)")
            arguments = [_argument(a, env, depth + 1) for a in args]
            stray = misplaced(arguments)
            if stray is not None:
                raise EvalError(stray.span, "a positional argument cannot follow a keyword argument")
            return callee.bind(arguments, expr.span)
    raise EvalError(expr.span, "cannot evaluate this expression")


def _boolean(expr: ast.Expr, env: Mapping[str, Value], depth: int, op: str) -> bool:
    value = _evaluate(expr, env, depth)
    if not isinstance(value, bool):
        raise EvalError(expr.span, f"`{op}` takes true or false (a comparison), not {describe(value)}")
    return value


def _plain(arg: ast.Expr | ast.Pair, func: str, env: Mapping[str, Value], depth: int) -> int | float:
    if isinstance(arg, ast.Pair):
        raise EvalError(arg.span, f"{func}() takes plain values")
    return _number(arg, env, depth + 1)


def misplaced(arguments: list[Argument]) -> Argument | None:
    """The first positional argument written after a keyword one, or None.

    Checked where arguments are written; a value bound earlier (`se(rd_ratio: 0.25)`) then called with
    positional ones binds them as functools.partial would.
    """
    seen_keyword = False
    for argument in arguments:
        if argument.name is not None:
            seen_keyword = True
        elif seen_keyword:
            return argument
    return None


def evaluate_arguments(args: list[ast.Expr | ast.Pair], env: Mapping[str, Value]) -> list[Argument]:
    """The values of a call's arguments, `name: value` pairs as keyword arguments."""
    return [_argument(a, env, 0) for a in args]


def _argument(arg: ast.Expr | ast.Pair, env: Mapping[str, Value], depth: int) -> Argument:
    if isinstance(arg, ast.Pair):
        if not isinstance(arg.key, ast.Name):
            raise EvalError(arg.key.span, "an argument name must be a plain name, as in `groupnorm(32, eps: 1e-3)`")
        return Argument(arg.key.id, _evaluate(arg.value, env, depth), arg.span)
    return Argument(None, _evaluate(arg, env, depth), arg.span)


def _builtin(expr: ast.Call, function: Builtin, values: list[int | float]) -> int | float:
    if not function.least <= len(values) <= function.most:
        wanted = (f"{function.least}" if function.least == function.most
                  else f"{function.least} or more" if function.most > 4 else f"{function.least} to {function.most}")
        raise EvalError(expr.span, f"{expr.func}() takes {wanted} values, got {len(values)}")
    if (refusal := function.refuse(values)) is not None:
        raise EvalError(expr.span, f"{expr.func}() {refusal}")
    return _bounded(expr, function.compute(*values))


def _number(expr: ast.Expr, env: Mapping[str, Value], depth: int) -> int | float:
    value = _evaluate(expr, env, depth)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvalError(expr.span, f"expected a number, got {describe(value)}")
    return value


def _arithmetic(expr: ast.Binary, left: int | float, right: int | float) -> int | float:
    op = expr.op
    if op in ("/", "//", "%") and right == 0:
        raise EvalError(expr.span, "division by zero")
    if op == "+":
        result = left + right
    elif op == "-":
        result = left - right
    elif op == "*":
        result = left * right
    elif op == "//":
        result = left // right
    elif op == "%":
        result = left % right
    elif isinstance(left, int) and isinstance(right, int):
        if left % right:
            raise EvalError(expr.span, f"{left} / {right} is not an integer (use // to round down)")
        result = left // right
    else:
        result = left / right
    return _bounded(expr, result)


def _bounded(expr: ast.Node, value: int | float) -> int | float:
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_MAGNITUDE:
        raise EvalError(expr.span, f"this value is out of range (beyond ±1e30): {describe(value)}")
    return value


def _unknown_name(name: str, env: Mapping[str, Value]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, [k for k in env if k.isidentifier() and not isinstance(env[k], Callee)], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown name '{name}'{hint}"


def interpolate(text: str, env: Mapping[str, Value], span: Span) -> str:
    """A name pattern with its `{expr}` parts evaluated: `"b{i + 1}"` is `"b2"` where `i` is 1."""
    from resdsl.parser import parse_expression

    pieces, rest = [], text
    while "{" in rest or "}" in rest:
        before, brace, after = rest.partition("{")
        inner, closing, rest = after.partition("}")
        if "}" in before or not brace or not closing or "{" in inner:
            raise EvalError(span, f"unbalanced braces in the name pattern {text!r}: write `{{expr}}` for each "
                                  "computed part")
        expr = parse_expression(inner)
        if expr is None:
            raise EvalError(span, f"`{{{inner}}}` in {text!r} is not an expression")
        try:
            value = _evaluate(expr, env, 0)
        except EvalError as error:
            raise EvalError(span, f"in `{{{inner}}}`: {error.message}") from None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise EvalError(span, f"`{{{inner}}}` in a name must be an integer or a name, not {describe(value)}")
        pieces += [before, str(value)]
    return "".join(pieces) + rest


def literal(value: Value) -> str:
    """`value` written as the language writes it: `3x32x32`, `true`, `groupnorm(32, eps: 0.001)`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Callee):
        if not value.arguments:
            return value.name
        arguments = (f"{a.name}: {literal(a.value)}" if a.name else literal(a.value) for a in value.arguments)
        return f"{value.name}({', '.join(arguments)})"
    if isinstance(value, Tensor):
        return value.node
    return repr(value)


def describe(value: Value) -> str:
    """A value as the user wrote it: `3x3`, `0.5`, `true`, `the op groupnorm`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, tuple):
        return "x".join(str(d) for d in value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Callee):
        return f"the {'shortcut option' if value.kind == 'shortcut' else value.kind} '{value.name}'"
    if isinstance(value, Tensor):
        return f"the tensor '{value.node}'"
    if isinstance(value, float) and not math.isfinite(value):
        return "an infinite number"
    return str(value)
