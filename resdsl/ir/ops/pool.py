"""Pooling: windows, or global pooling to 1x1 when no kernel is given."""

from __future__ import annotations

from resdsl.ir.ops.base import Args, Op, OpDoc, Param, Shape, feature_map, fmt, pair_text, stride_text, window


class _Pool(Op):
    kind: str  # "max" or "avg"

    def complete(self, args: Args) -> Args:
        if args["kernel"] is not None:
            if args["stride"] is None:
                args["stride"] = args["kernel"]
            if args["padding"] is None:
                args["padding"] = tuple((k - 1) // 2 for k in args["kernel"])
        return args

    def check(self, args: Args) -> None:
        if args["kernel"] is None:
            if any(args[k] not in (None, False) for k in ("stride", "padding", "ceil")):
                raise ValueError("a global pool (no kernel) takes no stride, padding or ceil")
            return
        if any(2 * p > k for p, k in zip(args["padding"], args["kernel"], strict=True)):
            raise ValueError(f"padding {fmt(args['padding'])} is more than half the kernel {fmt(args['kernel'])}")

    def infer(self, args: Args, inputs: list[Shape]) -> Shape:
        shape = feature_map(self.name, inputs)
        if args["kernel"] is None:
            return (shape[0], 1, 1)
        h, w = window(self.name, shape, args["kernel"], args["stride"], args["padding"], ceil=args["ceil"])
        return (shape[0], h, w)

    def label(self, args: Args) -> str:
        if args["kernel"] is None:
            return f"{self.kind} pool"  # global, as the paper's figures label it
        return f"{pair_text(args['kernel'])} {self.kind} pool{stride_text(args['stride'])}"


class MaxPool(_Pool):
    name = "maxpool"
    kind = "max"
    doc = OpDoc(
        "max pooling; stride defaults to the kernel, padding to (k-1)//2, at most half the kernel; no kernel: global",
        arguments="`kernel, stride = kernel, padding (k-1)//2, ceil false`",
        shape="windowed like conv; padding at most half the kernel; no kernel: global, `Cx1x1`",
        purpose="the stem's 3×3/2 pool; a global max pool",
    )
    signature = (
        Param("kernel", "pair", None, positional=True),
        Param("stride", "pair", None),
        Param("padding", "pair0", None),
        Param("ceil", "bool", False),
    )


class AvgPool(_Pool):
    name = "avgpool"
    kind = "avg"
    keeps_zero = True
    doc = OpDoc(
        "average pooling, as maxpool; without a kernel, global average pooling to Cx1x1",
        arguments="`kernel, stride = kernel, padding (k-1)//2, ceil false, count_include_pad true`",
        shape="as maxpool; no kernel: global average, `Cx1x1`",
        purpose="the head's global pool, SE's squeeze, option D's pooling",
    )
    signature = (
        Param("kernel", "pair", None, positional=True),
        Param("stride", "pair", None),
        Param("padding", "pair0", None),
        Param("ceil", "bool", False),
        Param("count_include_pad", "bool", True),
    )

    def check(self, args: Args) -> None:
        super().check(args)
        if args["kernel"] is None and not args["count_include_pad"]:
            raise ValueError("a global pool (no kernel) takes no count_include_pad")
