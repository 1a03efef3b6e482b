"""The primitive ops of the IR, one class each (signature, shape rule, cost, label, traits), registered by name.

Adding an op is one class in a module here plus its line in `OPS`; each backend registers a lowering
for the class (tests/test_ops.py checks that every op is lowered, drawn and documented).
"""

from resdsl.ir.ops.activation import GELU, HardSigmoid, HardSwish, ReLU, Sigmoid, SiLU, Softmax
from resdsl.ir.ops.base import REQUIRED, Args, Bound, Op, Param, Shape, ShapeError, coerce, fmt
from resdsl.ir.ops.conv import ChannelConv, Conv
from resdsl.ir.ops.io import Input, Output
from resdsl.ir.ops.linear import Linear
from resdsl.ir.ops.norm import BatchNorm, GroupNorm
from resdsl.ir.ops.pool import AvgPool, MaxPool
from resdsl.ir.ops.tensor import Add, Concat, Dropout, Flatten, Identity, Mul, PadChannels, SliceChannels, Subsample

OPS: dict[str, Op] = {op.name: op for op in (
    Input(), Output(),
    Conv(), ChannelConv(), Linear(),
    BatchNorm(), GroupNorm(),
    ReLU(), SiLU(), GELU(), HardSwish(), Sigmoid(), HardSigmoid(), Softmax(),
    MaxPool(), AvgPool(),
    Add(), Mul(), Concat(), SliceChannels(), Subsample(), PadChannels(), Flatten(), Identity(), Dropout(),
)}

__all__ = [
    "GELU",
    "OPS",
    "REQUIRED",
    "Add",
    "Args",
    "AvgPool",
    "BatchNorm",
    "Bound",
    "ChannelConv",
    "Concat",
    "Conv",
    "Dropout",
    "Flatten",
    "GroupNorm",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Input",
    "Linear",
    "MaxPool",
    "Mul",
    "Op",
    "Output",
    "PadChannels",
    "Param",
    "ReLU",
    "Shape",
    "ShapeError",
    "SiLU",
    "Sigmoid",
    "SliceChannels",
    "Softmax",
    "Subsample",
    "coerce",
    "fmt",
]
