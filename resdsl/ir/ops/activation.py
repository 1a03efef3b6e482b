"""Activations and gates: elementwise, parameter free, shape kept."""

from __future__ import annotations

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape, ShapeError, fmt


class ReLU(Op):
    name = "relu"
    doc = OpDoc(
        "max(x, 0)",
        purpose="the activation of every ResNet",
    )
    implied = keeps_zero = True
    fresh = False  # often applied in place

    def label(self, args: Args) -> str:
        return "ReLU"


class SiLU(Op):
    name = "silu"
    doc = OpDoc(
        "x · sigmoid(x) (swish)",
        purpose="`x · sigmoid(x)` (swish), as an `act`",
    )
    keeps_zero = True


class GELU(Op):
    name = "gelu"
    doc = OpDoc(
        "x · Φ(x), exact (erf) form",
        purpose="`x · Φ(x)`, the exact (erf) form, as an `act`",
    )
    keeps_zero = True


class HardSwish(Op):
    name = "hard_swish"
    doc = OpDoc(
        "x · relu6(x + 3) / 6",
        purpose="`x · relu6(x + 3) / 6`, as an `act`",
    )
    keeps_zero = True


class Sigmoid(Op):
    name = "sigmoid"
    fresh = False  # its backward reads its output: an in-place `add` or `relu` after it would break training
    doc = OpDoc(
        "1 / (1 + e^-x): the gate of SE and ECA",
        purpose="the gate of SE and ECA",
    )


class HardSigmoid(Op):
    name = "hard_sigmoid"
    doc = OpDoc(
        "relu6(x + 3) / 6",
        purpose="`relu6(x + 3) / 6`, a cheaper gate (MobileNetV3's)",
    )


class Softmax(Op):
    """Softmax over the channels, or across `branches` equal groups of them (the attention over SK's paths)."""

    name = "softmax"
    fresh = False  # its backward reads its output: an in-place `add` or `relu` after it would break training
    doc = OpDoc(
        "softmax over the channels; with `branches N`, across N equal groups of channels, channel by channel "
        "(SK's attention over its paths)",
        arguments="`branches` (none)",
        shape="kept; with `branches N`, channels divisible by N",
        purpose="softmax over the channels, or with `branches N` across N equal groups of channels, channel by "
                "channel: SK's attention over its paths",
    )
    signature = (Param("branches", "size", None),)

    def label(self, args: Args) -> str:
        return "softmax" if args["branches"] is None else f"softmax over {args['branches']} paths"

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = inputs[0]
        branches = args["branches"]
        if branches is not None and shape[0] % branches:
            raise ShapeError(f"softmax across {branches} branches needs channels divisible by {branches}, "
                             f"got {fmt(shape)}")
        return shape
