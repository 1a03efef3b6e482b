"""Convolutions: the 2-D conv of every ResNet, and ECA's 1-D conv across channels."""

from __future__ import annotations

from resdsl.ir.ops.base import (
    Args,
    Op,
    OpDoc,
    Param,
    Shape,
    ShapeError,
    check_width,
    feature_map,
    fmt,
    pair_text,
    stride_text,
    window,
)


class Conv(Op):
    name = "conv"
    doc = OpDoc(
        "2-D convolution; `groups` must divide the input and output channels",
        arguments="`kernel, out, stride 1, padding (k-1)//2·dilation, groups 1, dilation 1, bias false`",
        shape="`out × ⌊(H + 2p − d(k−1) − 1)/s⌋+1 × …`; `groups` divides the input and output channels",
        purpose="the convolutions of every block, projections (`conv 1x1`), SE's fully connected layers on 1×1 maps",
    )
    weighted = ends_branch = True
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

    def check(self, args: Args) -> None:
        for k, d, p in zip(args["kernel"], args["dilation"], args["padding"], strict=True):
            reach = d * (k - 1) + 1
            if p > reach // 2:
                raise ValueError(f"padding {p} is more than half the kernel's reach of {reach} "
                                 f"(kernel {k}, dilation {d})")

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = feature_map("conv", inputs)
        out, groups = args["out"], args["groups"]
        check_width(out)
        if shape[0] % groups or out % groups:
            bad, side = (shape[0], "input") if shape[0] % groups else (out, "output")
            raise ShapeError(f"groups {groups} does not divide the {bad} {side} channels")
        h, w = window("conv", shape, args["kernel"], args["stride"], args["padding"], args["dilation"])
        return (out, h, w)

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        kh, kw = args["kernel"]
        weights = args["out"] * (inputs[0][0] // args["groups"]) * kh * kw
        return weights + (args["out"] if args["bias"] else 0)

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        kh, kw = args["kernel"]
        return shape[0] * shape[1] * shape[2] * (inputs[0][0] // args["groups"]) * kh * kw

    def label(self, args: Args) -> str:
        text = f"{pair_text(args['kernel'])} conv, {args['out']}"
        if args["groups"] > 1:
            text += f", groups {args['groups']}"
        if args["dilation"] != (1, 1):
            text += f", dilation {pair_text(args['dilation'])}"
        return text + stride_text(args["stride"])

    def table_entry(self, args: Args) -> str:
        text = f"{pair_text(args['kernel'])}, {args['out']}"
        return text + (f", groups {args['groups']}" if args["groups"] > 1 else "")


class ChannelConv(Op):
    """ECA's gate (Wang et al. 2020): one 1-D conv of `kernel` taps sliding along the channels of a Cx1x1 map."""

    name = "channel_conv"
    doc = OpDoc(
        "1-D convolution across the channels of a Cx1x1 map (ECA), `kernel` taps, no bias",
        arguments="`kernel` (odd)",
        shape="kept; needs a `Cx1x1` map",
        purpose="ECA's 1-D conv across the pooled channels, no bias",
    )
    weighted = True
    signature = (Param("kernel", "size", positional=True),)

    def check(self, args: Args) -> None:
        if args["kernel"] % 2 == 0:
            raise ValueError(f"the kernel must be odd to keep the channel count, got {args['kernel']}")

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = feature_map("channel_conv", inputs)
        if shape[1:] != (1, 1):
            raise ShapeError(f"channel_conv needs a Cx1x1 map but gets {fmt(shape)}; pool it first (`avgpool`)")
        return shape

    def params(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return args["kernel"]

    def macs(self, args: Args, inputs: list[Shape], shape: Shape) -> int:
        return shape[0] * args["kernel"]

    def label(self, args: Args) -> str:
        return f"channel conv {args['kernel']}"
