"""Normalisations: BatchNorm and GroupNorm, each with an affine weight and bias per channel."""

from __future__ import annotations

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape, ShapeError, feature_map


class BatchNorm(Op):
    name = "batchnorm"
    doc = OpDoc(
        "batch normalisation; 2 params per channel (the running statistics are buffers)",
        arguments="`eps 1e-5, momentum 0.1`",
        purpose="the norm of every ResNet; 2 params per channel, running stats are buffers",
    )
    signature = (Param("eps", "positive", 1e-5), Param("momentum", "unit", 0.1))
    weighted = implied = ends_branch = True

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 2 * shape[0]

    def label(self, args: Args) -> str:
        return "BN"


class GroupNorm(Op):
    name = "groupnorm"
    doc = OpDoc(
        "group normalisation (Wu & He 2018) over `groups` groups of channels; 2 params per channel",
        arguments="`groups, eps 1e-5`",
        shape="kept; `groups` divides the channels",
        purpose="ResNet-50-GN (`norm: groupnorm(32)`); 2 params per channel",
    )
    signature = (Param("groups", "size", positional=True), Param("eps", "positive", 1e-5))
    weighted = implied = ends_branch = True

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = feature_map("groupnorm", inputs)
        if shape[0] % args["groups"]:
            raise ShapeError(f"groupnorm's {args['groups']} groups do not divide {shape[0]} channels")
        return shape

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return 2 * shape[0]

    def label(self, args: Args) -> str:
        return f"GN {args['groups']}"
