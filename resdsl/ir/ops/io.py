"""The graph's input and output, added by the compiler."""

from __future__ import annotations

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape


class Input(Op):
    name = "input"
    doc = OpDoc(
        "the network's input (from the `input CxHxW` line)",
    )
    arity = 0
    internal = True
    fresh = False  # the caller's tensor: never written in place
    signature = (Param("shape", "shape", positional=True),)

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        return args["shape"]


class Output(Op):
    name = "output"
    doc = OpDoc(
        "the network's output (the last layer's)",
    )
    internal = implied = True
    fresh = False
