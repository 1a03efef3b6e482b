"""Ops that combine, cut or reshape tensors: add, mul, concat, channel slices, option A's halves, flatten."""

from __future__ import annotations

import math

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape, ShapeError, check_width, feature_map, fmt


class Add(Op):
    name = "add"
    doc = OpDoc(
        "the sum of the current tensor and another of the same shape (`add x`; `add shortcut` in blocks)",
        arguments="a tensor: `add x`",
        shape="kept; both shapes equal",
        purpose="joining paths (SK); `add shortcut` in blocks",
    )
    arity = 2
    joins = "+"

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        if inputs[0] != inputs[1]:
            raise ShapeError(f"cannot add {fmt(inputs[1])} to {fmt(inputs[0])}")
        return inputs[0]


class Mul(Op):
    """Elementwise product; a Cx1x1 gate broadcasts over a CxHxW map (SE, ECA, SK)."""

    name = "mul"
    doc = OpDoc(
        "the product of the current tensor and another (`mul x`); a Cx1x1 gate broadcasts over a CxHxW map",
        arguments="a tensor: `mul x`",
        shape="equal shapes, or a `Cx1x1` gate of the other's channels broadcast over `H×W`",
        purpose="applying SE/ECA gates and SK's path weights",
    )
    arity = 2
    joins = "×"
    keeps_zero = True

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        a, b = inputs
        if a == b:
            return a
        if len(a) == len(b) == 3 and a[0] == b[0] and (a[1:] == (1, 1) or b[1:] == (1, 1)):
            return a if b[1:] == (1, 1) else b
        raise ShapeError(f"cannot multiply {fmt(a)} by {fmt(b)}: the shapes must match, or one be a "
                         "Cx1x1 gate of the other's channels")


class Concat(Op):
    name = "concat"
    doc = OpDoc(
        "the current tensor and others joined along the channels (`concat a, b`)",
        arguments="tensors: `concat a, b, …`",
        shape="channels summed; `H×W` equal",
        purpose="joining branches along the channels",
    )
    arity = None
    joins = "‖"

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        first = inputs[0]
        for shape in inputs[1:]:
            if len(shape) != len(first) or shape[1:] != first[1:]:
                raise ShapeError(f"cannot concatenate {fmt(shape)} with {fmt(first)}: all but the channels "
                                 "must match")
        channels = sum(shape[0] for shape in inputs)
        check_width(channels)
        return (channels, *first[1:])


class SliceChannels(Op):
    name = "slice_channels"
    doc = OpDoc(
        "channels `start` up to `stop` (Python's `x[:, start:stop]`): splits a tensor into branches",
        arguments="`start, stop`",
        shape="`(stop − start) × H × W`; `stop` ≤ C",
        purpose="`x[:, start:stop]`: splitting a tensor into branches",
    )
    signature = (Param("start", "count", positional=True), Param("stop", "size", positional=True))
    keeps_zero = True
    fresh = False  # a view of its input

    def check(self, args: Args) -> None:
        if args["start"] >= args["stop"]:
            raise ValueError(f"start {args['start']} must be below stop {args['stop']}")

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = inputs[0]
        if args["stop"] > shape[0]:
            raise ShapeError(f"slice_channels {args['start']}:{args['stop']} goes past the {shape[0]} channels "
                             f"of {fmt(shape)}")
        return (args["stop"] - args["start"], *shape[1:])

    def label(self, args: Args) -> str:
        return f"channels {args['start']}:{args['stop']}"


class Subsample(Op):
    """`x[:, :, ::s, ::s]`: the spatial half of option A."""

    name = "subsample"
    doc = OpDoc(
        "`x[:, :, ::s, ::s]` (option A)",
        arguments="`stride`",
        shape="`C × ⌈H/s⌉ × ⌈W/s⌉`",
        purpose="`x[:, :, ::s, ::s]`, option A",
    )
    signature = (Param("stride", "size", positional=True),)
    keeps_zero = True
    fresh = False  # a view of its input

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        c, h, w = feature_map("subsample", inputs)
        s = args["stride"]
        return (c, -(-h // s), -(-w // s))

    def label(self, args: Args) -> str:
        return f"subsample /{args['stride']}"


class PadChannels(Op):
    """Zero channels appended after the input's: the channel half of option A."""

    name = "pad_channels"
    doc = OpDoc(
        "appends `out - C` zero channels after the input's (option A); cannot shrink",
        arguments="`out`",
        shape="`out × H × W`; cannot shrink",
        purpose="zero channels appended after the input's, option A",
    )
    signature = (Param("out", "size", positional=True),)
    keeps_zero = True

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        c, h, w = feature_map("pad_channels", inputs)
        check_width(args["out"])
        if args["out"] < c:
            raise ShapeError(f"zero-padding cannot shrink {c} channels to {args['out']}")
        return (args["out"], h, w)

    def label(self, args: Args) -> str:
        return f"zero-pad to {args['out']}"


class Flatten(Op):
    name = "flatten"
    doc = OpDoc(
        "`CxHxW` to `C*H*W`; inserted before a `linear` that follows a Cx1x1 map",
        shape="`C·H·W`",
        purpose="before a `linear` (inserted automatically after a `Cx1x1` map)",
    )
    implied = keeps_zero = True
    fresh = False  # a view of its input

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        return (math.prod(inputs[0]),)


class Identity(Op):
    name = "identity"
    doc = OpDoc(
        "the input itself (a shortcut case that adds the block's input)",
        purpose="the input itself: a layer that names a tensor as it is (`keep: identity`), or a whole shortcut "
                "case that adds the block's input",
    )
    implied = keeps_zero = True
    fresh = False


class Dropout(Op):
    name = "dropout"
    doc = OpDoc(
        "dropout with probability `p` (0 <= p < 1) while training",
        arguments="`p 0.5`",
        shape="kept; `0 ≤ p < 1`",
        purpose="dropout while training (Wide ResNet's units)",
    )
    signature = (Param("p", "fraction", 0.5, positional=True),)
    implied = keeps_zero = True
    fresh = False  # dropout 0 passes its input through
