"""What every op is: a signature its arguments are bound to, a shape rule, a cost, a diagram label, and traits.

A shape is `(C, H, W)` for feature maps and `(F,)` for flat features, batch excluded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from resdsl.expr import Argument, Tensor, Value, describe
from resdsl.limits import MAX_WIDTH
from resdsl.source import Span

Shape = tuple[int, ...]
Args = dict[str, Any]

REQUIRED = object()
TRAITS = ("weighted", "implied", "fresh", "keeps_zero", "ends_branch", "internal", "joins")  # see `Op`


class ShapeError(Exception):
    """An op cannot take the shapes it is given; the message is one sentence."""


@dataclass(frozen=True)
class Param:
    """One argument of an op. `kind` says what values it takes (see `coerce`)."""

    name: str
    kind: str
    default: Any = REQUIRED
    positional: bool = False


@dataclass
class Bound:
    """A layer's arguments bound to its op: the values, the extra tensor inputs, and what was wrong."""

    args: Args
    tensors: list[Tensor] = field(default_factory=list)
    errors: list[tuple[Span, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OpDoc:
    """What an op is, in words: `summary` for the editor's hover, the rest for the language reference's table of
    ops (docs/language.md, made by `resdsl.ir.ops.reference_table`). Cells are markdown."""

    summary: str
    arguments: str = "—"  # the arguments and their defaults
    shape: str = "kept"  # the shape rule
    purpose: str = ""  # what it is for (every op a spec can write has one)


class Op:
    """Base of the primitive ops: one instance of each subclass is registered in `resdsl.ir.ops.OPS`.

    Traits (the class attributes listed in `TRAITS`) say what the passes, diagrams and backends need to know of
    an op, so that none of them compares op names; a subclass sets those that differ from the defaults here.
    """

    name: ClassVar[str]
    doc: ClassVar[OpDoc]
    signature: ClassVar[tuple[Param, ...]] = ()
    arity: ClassVar[int | None] = 1  # tensor inputs; None: two or more
    # traits
    weighted: ClassVar[bool] = False  # has learnable parameters
    implied: ClassVar[bool] = False  # left out of block diagrams, as the paper's figures leave out BN and ReLU
    fresh: ClassVar[bool] = True  # returns a new tensor, which a sole consumer may overwrite in place
    keeps_zero: ClassVar[bool] = False  # parameter free, and zero when an input is all zero (any one, for mul)
    ends_branch: ClassVar[bool] = False  # zero when its weight is (and it has no bias): zero_init_residual's target
    internal: ClassVar[bool] = False  # added by the compiler (the network's input and output); a spec cannot write it
    joins: ClassVar[str | None] = None  # combines tensors: block diagrams draw it as a circle with this sign

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<op {self.name}>"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    # --- arguments -------------------------------------------------------------------------

    def bind(self, arguments: list[Argument], span: Span) -> Bound:
        """Bind arguments to the signature: positional ones in order (tensors of a multi-input op go to `tensors`),
        then keywords by name. Their written order was checked where they were written."""
        bound = Bound({})
        given: dict[str, tuple[Value, Span]] = {}
        slots = iter(p for p in self.signature if p.positional)
        names = {p.name: p for p in self.signature}
        positional = [a for a in arguments if a.name is None]  # earlier bound first (`groupnorm(32)`), as partial
        for argument in positional:
            if self.arity != 1:
                if isinstance(argument.value, Tensor):
                    bound.tensors.append(argument.value)
                else:
                    bound.errors.append((argument.span, f"{self.name} reads tensors — a layer's label or "
                                                        f"`input` — not {describe(argument.value)}"))
                continue
            slot = next(slots, None)
            if slot is None:
                count = sum(p.positional for p in self.signature)
                what = "no positional arguments" if count == 0 else f"{count} positional argument(s)"
                bound.errors.append((argument.span, f"{self.name} takes {what}; this one is extra"))
                continue
            given[slot.name] = (argument.value, argument.span)
        for argument in arguments:
            if argument.name is None:
                continue
            if argument.name not in names:
                bound.errors.append((argument.span, _unknown(f"argument of {self.name}", argument.name, names)))
            elif argument.name in given:
                bound.errors.append((argument.span, f"{self.name} argument '{argument.name}' is given twice"))
            else:
                given[argument.name] = (argument.value, argument.span)
        for param in self.signature:
            if param.name in given:
                value, where = given[param.name]
                try:
                    bound.args[param.name] = coerce(param.kind, value)
                except ValueError as error:
                    bound.errors.append((where, f"{self.name} argument '{param.name}': {error}"))
            elif param.default is REQUIRED:
                bound.errors.append((span, f"{self.name} needs its {param.name} argument"))
            else:
                bound.args[param.name] = None if param.default is None else coerce(param.kind, param.default)
        if not bound.errors:
            bound.args = self.complete(bound.args)
            try:
                self.check(bound.args)
            except ValueError as error:
                bound.errors.append((span, f"{self.name}: {error}"))
        return bound

    def complete(self, args: Args) -> Args:
        """Fill defaults that depend on other arguments (e.g. padding from kernel)."""
        return args

    def check(self, args: Args) -> None:
        """Refuse arguments that do not go together; raises ValueError with a plain sentence."""

    # --- rules -----------------------------------------------------------------------------

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        """The output shape, or ShapeError."""
        return inputs[0]

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 0

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 0

    def label(self, args: Args) -> str:
        """The op in the paper's words, for diagrams: "3×3 conv, 64, /2"."""
        return self.text(args)

    def table_entry(self, args: Args) -> str | None:
        """The op as the paper's Table 1 lists a block's layers ("3×3, 64"), or None for ops it leaves out."""
        return None

    def text(self, args: Args) -> str:
        """The op with its arguments as written in a spec, defaults left out: "conv 3x3, 64, stride 2"."""
        words = []
        for param in self.signature:
            value = args.get(param.name)
            if param.positional:
                if value is not None:  # a kernel reads as 3x3, a stride as 2
                    words.append(fmt(value) if isinstance(value, tuple) else _value(value))
            elif value != self._default(args, param):
                words.append(param.name if value is True else f"{param.name} {_value(value)}")
        return f"{self.name} {', '.join(words)}" if words else self.name

    def _default(self, args: Args, param: Param) -> Any:
        """The value `param` would take if left out (defaults may depend on other arguments)."""
        if param.default is REQUIRED:
            return None
        trial = dict(args)
        trial[param.name] = None if param.default is None else coerce(param.kind, param.default)
        return self.complete(trial)[param.name]


def coerce(kind: str, value: Any) -> Any:
    """Check and normalise one argument value; raises ValueError with a plain sentence."""
    if kind in ("size", "count"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if kind == "size" and value <= 0:
            raise ValueError(f"expected a positive integer, got {describe(value)}")
        if kind == "count" and value < 0:
            raise ValueError(f"expected a non-negative integer, got {describe(value)}")
        if value > MAX_WIDTH:
            raise ValueError(f"{describe(value)} is over the limit of {MAX_WIDTH:,} for a size or count")
        return value
    if kind in ("pair", "pair0"):
        dims = value if isinstance(value, tuple) else (value, value)
        if len(dims) != 2:
            raise ValueError(f"expected a size like 3 or 3x3, got {describe(value)}")
        return tuple(coerce("size" if kind == "pair" else "count", d) for d in dims)
    if kind in ("float", "positive", "fraction", "unit"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {describe(value)}")
        if kind == "positive" and value <= 0:
            raise ValueError(f"expected a positive number, got {describe(value)}")
        if kind == "fraction" and not 0 <= value < 1:
            raise ValueError(f"expected a probability in [0, 1), got {describe(value)}")
        if kind == "unit" and not 0 <= value <= 1:
            raise ValueError(f"expected a number in [0, 1], got {describe(value)}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {describe(value)}")
        return value
    if kind == "shape":
        if not isinstance(value, tuple):
            raise ValueError(f"expected a shape like 3x224x224, got {describe(value)}")
        return value
    raise AssertionError(kind)


def _unknown(kind: str, name: str, known) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    return f"unknown {kind} '{name}'{hint}"


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return str(value[0]) if len(value) == 2 and value[0] == value[1] else "x".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def pair_text(value: tuple[int, int]) -> str:
    return f"{value[0]}×{value[1]}"


def stride_text(stride: tuple[int, int]) -> str:
    if stride == (1, 1):
        return ""
    return f", /{stride[0]}" if stride[0] == stride[1] else f", /{pair_text(stride)}"


def feature_map(op: str, inputs: list[Shape]) -> Shape:
    shape = inputs[0]
    if len(shape) != 3:
        raise ShapeError(f"{op} needs a CxHxW feature map but gets {fmt(shape)} flat features")
    return shape


def check_width(width: int) -> None:
    if width > MAX_WIDTH:
        raise ShapeError(f"width {width:,} is over the limit of {MAX_WIDTH:,} channels or features")


def window(op: str, shape: Shape, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int] = (1, 1), ceil: bool = False) -> tuple[int, int]:
    """Output H, W of a sliding window by PyTorch's rule (`pooling_output_shape`, ceil mode included).

    Refused as PyTorch refuses it: a window that leaves no output (wider than the padded input, or in ceil
    mode, one that would start only in the padding).
    """
    sizes = []
    for size, k, s, p, d in zip(shape[1:], kernel, stride, padding, dilation, strict=True):
        reach = d * (k - 1) + 1
        out = (size + 2 * p - reach + (s - 1 if ceil else 0)) // s + 1
        if ceil and (out - 1) * s >= size + p:  # the last window would start in the padding
            out -= 1
        if out < 1:
            raise ShapeError(f"spatial size reaches zero: {op} {fmt(kernel)} on a {fmt(shape)} input: its window "
                             f"spans {reach:,}, the padded input only {size + 2 * p:,}")
        sizes.append(out)
    return sizes[0], sizes[1]
