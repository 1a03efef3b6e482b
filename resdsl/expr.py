"""Evaluating expressions: integer arithmetic on params, with errors at their span."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

from resdsl import ast
from resdsl.source import Span

Value = int | float | bool | str | tuple[int, ...]


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
_FUNCTIONS: dict[str, Callable[..., Value]] = {"min": min, "max": max}


def evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    """The value of `expr` with names looked up in `env`."""
    try:
        return _evaluate(expr, env)
    except RecursionError:
        raise EvalError(expr.span, "expression is nested too deeply") from None


def _evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    match expr:
        case ast.Literal(value=value):
            return value
        case ast.Name(id=name):
            if name not in env:
                raise EvalError(expr.span, _unknown_name(name, env))
            return env[name]
        case ast.Neg(operand=operand):
            return -_number(operand, env)
        case ast.Binary(op=op, left=left, right=right):
            return _arithmetic(expr, op, _number(left, env), _number(right, env))
        case ast.Compare(op=op, left=left, right=right):
            a, b = _evaluate(left, env), _evaluate(right, env)
            try:
                return _COMPARE[op](a, b)
            except TypeError:
                raise EvalError(expr.span, f"cannot compare {describe(a)} with {describe(b)}") from None
        case ast.Conditional(then=then, condition=condition, otherwise=otherwise):
            return _evaluate(then, env) if _evaluate(condition, env) else _evaluate(otherwise, env)
        case ast.Call(func=func, args=args) if func in _FUNCTIONS and args:
            if any(isinstance(a, ast.Pair) for a in args):
                raise EvalError(expr.span, f"{func}() takes plain values")
            return _FUNCTIONS[func](*(_number(a, env) for a in args))
        case ast.Call(func=func):
            raise EvalError(expr.span, f"unknown function '{func}' (a space is needed before '(' "
                                       "to pass a value in parentheses)")
    raise EvalError(expr.span, "cannot evaluate this expression")


def _number(expr: ast.Expr, env: Mapping[str, Value]) -> int | float:
    value = _evaluate(expr, env)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EvalError(expr.span, f"expected a number, got {describe(value)}")
    return value


def _arithmetic(expr: ast.Binary, op: str, left: int | float, right: int | float) -> int | float:
    if op in ("/", "//", "%") and right == 0:
        raise EvalError(expr.span, "division by zero")
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "//":
        return left // right
    if op == "%":
        return left % right
    if isinstance(left, int) and isinstance(right, int):
        if left % right:
            raise EvalError(expr.span, f"{left} / {right} is not an integer (use // to round down)")
        return left // right
    return left / right


def _unknown_name(name: str, env: Mapping[str, Value]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(env), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown name '{name}'{hint}"


def describe(value: Value) -> str:
    """A value as the user wrote it: `3x3`, `0.5`, `true`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(str(d) for d in value)
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
