"""The abstract syntax of a `.res` file: frozen pydantic models, each with its span."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from resdsl.source import Span


class Node(BaseModel):
    model_config = ConfigDict(frozen=True)

    span: Span


# --- expressions -----------------------------------------------------------


class Literal(Node):
    """An int, float, bool, string or shape (`3x224x224`) written in the source."""

    value: int | float | bool | str | tuple[int, ...]


class Name(Node):
    id: str


class Binary(Node):
    op: str
    left: Expr
    right: Expr


class Neg(Node):
    operand: Expr


class Compare(Node):
    op: str
    left: Expr
    right: Expr


class Conditional(Node):
    then: Expr
    condition: Expr
    otherwise: Expr


class Pair(Node):
    """`key: value` inside a call, as in `steps(32000: 0.1)`."""

    key: Expr
    value: Expr


class Call(Node):
    func: str
    args: list[Expr | Pair]


Expr = Literal | Name | Binary | Neg | Compare | Conditional | Call


class Kwarg(Node):
    """`name value` or `name: value`."""

    name: str
    value: Expr


# --- layers, blocks, shortcuts -----------------------------------------------


class Layer(Node):
    """One primitive op: `conv1: conv 3x3, 64, stride 2`."""

    label: str | None
    op: str
    op_span: Span
    args: list[Expr]
    kwargs: list[Kwarg]


class Let(Node):
    """A local value inside a block: `mid = width * base_width // 64`."""

    name: str
    value: Expr


Statement = Layer | Let


class Formal(Node):
    name: str
    default: Expr | None


class BlockDef(Node):
    name: str
    formals: list[Formal]
    body: list[Statement]


class BlockAlias(Node):
    """`block plain_basic = basic(shortcut: none)`: a block with arguments bound."""

    name: str
    target: str
    bindings: list[Kwarg]


class ShortcutDef(Node):
    """A shortcut option: what `add shortcut` adds when the shape is kept or changed.

    A missing case means no shortcut in that case.
    """

    name: str
    same: list[Statement] | None
    changed: list[Statement] | None


class ParamDecl(Node):
    name: str
    value: Expr | None


# --- networks ------------------------------------------------------------------


class Stage(Node):
    """`layer2: 4 x 128, stride 2`: depth, width and per-stage options."""

    label: str | None
    depth: Expr
    width: Expr | None
    options: list[Kwarg]


class Stages(Node):
    options: list[Kwarg]
    items: list[Stage] | None


class Setting(Node):
    """One line of a `train` section: `lr 0.1` or `augment pad 4, crop 32, flip`."""

    key: str
    args: list[Expr]
    kwargs: list[Kwarg]


class Section(Node):
    layers: list[Statement]


class Train(Node):
    settings: list[Setting]


class Extends(Node):
    path: str
    assigns: list[Kwarg]


class InputShape(Node):
    dims: tuple[int, ...]


class Network(Node):
    name: str
    extends: Extends | None
    input: InputShape | None = None
    stem: Section | None = None
    stages: Stages | None = None
    head: Section | None = None
    train: Train | None = None
    repeated: list[Span] = []


class Module(Node):
    """A whole file."""

    params: list[ParamDecl]
    blocks: list[BlockDef | BlockAlias]
    shortcuts: list[ShortcutDef]
    networks: list[Network]


for _model in (Binary, Neg, Compare, Conditional, Pair, Call, Kwarg, Layer, Let, Formal):
    _model.model_rebuild()
