"""The primitive ops of the IR, one class each (signature, shape rule, cost, label, traits), registered by name.

Adding an op is one class in a module here plus its line in `OPS`; each backend registers a lowering
for the class (tests/test_ops.py checks that every op is lowered, drawn and documented). The language
reference's table of ops is `reference_table()`, made from the classes' `doc`.
"""

from resdsl.ir.ops.activation import GELU, HardSigmoid, HardSwish, ReLU, Sigmoid, SiLU, Softmax
from resdsl.ir.ops.base import REQUIRED, TRAITS, Args, Bound, Op, OpDoc, Param, Shape, ShapeError, coerce, fmt
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


def reference_table() -> str:
    """The table of ops in docs/language.md (between its `ops table` markers): one row per op a spec can write."""
    rows = ["| op | arguments (defaults) | shape rule | what it is for |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {op.doc.arguments} | {op.doc.shape} | {op.doc.purpose} |"
             for name, op in OPS.items() if not op.internal]
    return "\n".join(rows) + "\n"


__all__ = [
    "GELU",
    "OPS",
    "REQUIRED",
    "TRAITS",
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
    "OpDoc",
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
    "reference_table",
]
