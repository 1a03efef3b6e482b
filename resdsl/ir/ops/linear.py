"""The fully-connected layer of the head."""

from __future__ import annotations

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape, ShapeError, check_width, fmt


class Linear(Op):
    name = "linear"
    doc = OpDoc(
        "fully connected; needs flat features (after a Cx1x1 map a `flatten` is inserted); `in` is checked if given",
        arguments="`out, in (checked if given), bias true`",
        shape="`F` → `out`; needs flat features, a `flatten` is inserted after a `Cx1x1` map",
        purpose="the classifier",
    )
    weighted = True
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
        check_width(args["out"])
        return (args["out"],)

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return inputs[0][0] * args["out"] + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return inputs[0][0] * args["out"]

    def label(self, args: Args) -> str:
        return f"fc {args['out']}"
