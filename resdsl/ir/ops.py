"""The primitive ops of the IR: each op's arguments, shape rule, params and MACs, in one place.

A shape is `(C, H, W)` for feature maps and `(F,)` for flat features, batch excluded.
Adding an op is one class here with `@register`; backends map op names to their own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

Shape = tuple[int, ...]
Args = dict[str, Any]

MAX_WIDTH = 65_536
REQUIRED = object()


class ShapeError(Exception):
    """An op cannot take the shapes it is given (or its arguments are out of range)."""


@dataclass(frozen=True)
class Param:
    """One argument of an op. `kind` says what values it takes (see `coerce`)."""

    name: str
    kind: str
    default: Any = REQUIRED
    positional: bool = False


class Op:
    """Base of the primitive ops."""

    name: ClassVar[str]
    signature: ClassVar[tuple[Param, ...]] = ()
    arity: ClassVar[int] = 1

    def complete(self, args: Args) -> Args:
        """Fill defaults that depend on other arguments (e.g. padding from kernel)."""
        return args

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        """The output shape, or ShapeError."""
        return inputs[0]

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 0

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 0


OPS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    OPS[cls.name] = cls()
    return cls


def coerce(kind: str, value: Any) -> Any:
    """Check and normalise one argument value; raises ValueError with a plain sentence."""
    if kind in ("size", "count"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_show(value)}")
        if kind == "size" and value <= 0:
            raise ValueError(f"expected a positive integer, got {value}")
        if kind == "count" and value < 0:
            raise ValueError(f"expected a non-negative integer, got {value}")
        return value
    if kind in ("pair", "pair0"):
        dims = value if isinstance(value, tuple) else (value, value)
        if len(dims) != 2:
            raise ValueError(f"expected a size like 3 or 3x3, got {_show(value)}")
        return tuple(coerce("size" if kind == "pair" else "count", d) for d in dims)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_show(value)}")
        return float(value)
    if kind == "probability":
        p = coerce("float", value)
        if not 0 <= p < 1:
            raise ValueError(f"expected a probability in [0, 1), got {value}")
        return p
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_show(value)}")
        return value
    raise AssertionError(kind)


def _show(value: Any) -> str:
    from resdsl.expr import describe

    return describe(value)


def _spatial(op: str, inputs: list[Shape]) -> Shape:
    shape = inputs[0]
    if len(shape) != 3:
        raise ShapeError(f"{op} needs a CxHxW feature map but gets {fmt(shape)} flat features")
    return shape


def _check_width(width: int) -> None:
    if width > MAX_WIDTH:
        raise ShapeError(f"width {width:,} is over the limit of {MAX_WIDTH:,}")


def _window(op: str, shape: Shape, kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], dilation: tuple[int, int] = (1, 1), ceil: bool = False) -> tuple[int, int]:
    """Output H, W of a sliding window (PyTorch's formula, ceil mode included)."""
    sizes = []
    for size, k, s, p, d in zip(shape[1:], kernel, stride, padding, dilation, strict=True):
        span = size + 2 * p - d * (k - 1) - 1
        out = (math.ceil(span / s) if ceil else span // s) + 1 if span >= 0 else 0
        if ceil and out > 0 and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    if min(sizes) <= 0:
        raise ShapeError(f"spatial size reaches zero: {op} {fmt(kernel)} on a {fmt(shape)} input "
                         f"gives {sizes[0]}x{sizes[1]}")
    return sizes[0], sizes[1]


def fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


@register
class Input(Op):
    name = "input"
    arity = 0
    signature = (Param("shape", "shape", positional=True),)

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        return args["shape"]


@register
class Output(Op):
    name = "output"


@register
class Conv(Op):
    name = "conv"
    signature = (
        Param("kernel", "pair", positional=True),
        Param("out", "size", positional=True),
        Param("stride", "pair", 1),
        Param("padding", "pair0", None),
        Param("groups", "size", 1),
        Param("dilation", "pair", 1),
        Param("bias", "bool", False),
    )

    def complete(self, args: Args) -> Args:
        if args["padding"] is None:
            args["padding"] = tuple((k - 1) // 2 * d for k, d in zip(args["kernel"], args["dilation"], strict=True))
        return args

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = _spatial("conv", inputs)
        out, groups = args["out"], args["groups"]
        _check_width(out)
        if shape[0] % groups or out % groups:
            bad = shape[0] if shape[0] % groups else out
            side = "input" if shape[0] % groups else "output"
            raise ShapeError(f"groups {groups} does not divide the {bad} {side} channels")
        h, w = _window("conv", shape, args["kernel"], args["stride"], args["padding"], args["dilation"])
        return (out, h, w)

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        kh, kw = args["kernel"]
        weights = args["out"] * (inputs[0][0] // args["groups"]) * kh * kw
        return weights + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        kh, kw = args["kernel"]
        return shape[0] * shape[1] * shape[2] * (inputs[0][0] // args["groups"]) * kh * kw


@register
class BatchNorm(Op):
    name = "batchnorm"
    signature = (Param("eps", "float", 1e-5), Param("momentum", "float", 0.1))

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 2 * shape[0]


@register
class ReLU(Op):
    name = "relu"


@register
class Identity(Op):
    name = "identity"


@register
class Dropout(Op):
    name = "dropout"
    signature = (Param("p", "probability", 0.5, positional=True),)


class _Pool(Op):
    def complete(self, args: Args) -> Args:
        if args["kernel"] is not None:
            if args["stride"] is None:
                args["stride"] = args["kernel"]
            if args["padding"] is None:
                args["padding"] = tuple((k - 1) // 2 for k in args["kernel"])
        return args

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = _spatial(self.name, inputs)
        if args["kernel"] is None:
            return (shape[0], 1, 1)
        if any(2 * p > k for p, k in zip(args["padding"], args["kernel"], strict=True)):
            raise ShapeError(f"{self.name} padding {fmt(args['padding'])} is more than half "
                             f"the kernel {fmt(args['kernel'])}")
        h, w = _window(self.name, shape, args["kernel"], args["stride"], args["padding"], ceil=args["ceil"])
        return (shape[0], h, w)


@register
class MaxPool(_Pool):
    name = "maxpool"
    signature = (
        Param("kernel", "pair", positional=True),
        Param("stride", "pair", None),
        Param("padding", "pair0", None),
        Param("ceil", "bool", False),
    )


@register
class AvgPool(_Pool):
    """Without a kernel, global average pooling to 1x1 (resolution-agnostic)."""

    name = "avgpool"
    signature = (
        Param("kernel", "pair", None, positional=True),
        Param("stride", "pair", None),
        Param("padding", "pair0", None),
        Param("ceil", "bool", False),
        Param("count_include_pad", "bool", True),
    )


@register
class Subsample(Op):
    """`x[:, :, ::s, ::s]`: the spatial half of option A."""

    name = "subsample"
    signature = (Param("stride", "size", positional=True),)

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        c, h, w = _spatial("subsample", inputs)
        s = args["stride"]
        return (c, -(-h // s), -(-w // s))


@register
class PadChannels(Op):
    """Zero channels appended after the input's: the channel half of option A."""

    name = "pad_channels"
    signature = (Param("out", "size", positional=True),)

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        c, h, w = _spatial("pad_channels", inputs)
        _check_width(args["out"])
        if args["out"] < c:
            raise ShapeError(f"zero-padding cannot shrink {c} channels to {args['out']}")
        return (args["out"], h, w)


@register
class Add(Op):
    name = "add"
    arity = 2

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        if inputs[0] != inputs[1]:
            raise ShapeError(f"cannot add {fmt(inputs[1])} to {fmt(inputs[0])}")
        return inputs[0]


@register
class Flatten(Op):
    name = "flatten"

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        return (math.prod(inputs[0]),)


@register
class Linear(Op):
    name = "linear"
    signature = (
        Param("out", "size", positional=True),
        Param("in", "size", None),
        Param("bias", "bool", True),
    )

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = inputs[0]
        if len(shape) != 1:
            raise ShapeError(f"linear needs flat features but gets a {fmt(shape)} feature map; "
                             "add a global `avgpool` or `flatten` before it")
        if args["in"] is not None and args["in"] != shape[0]:
            raise ShapeError(f"linear expects {args['in']:,} input features but gets {shape[0]:,}")
        _check_width(args["out"])
        return (args["out"],)

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return inputs[0][0] * args["out"] + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return inputs[0][0] * args["out"]
