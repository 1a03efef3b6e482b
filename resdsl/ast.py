"""The abstract syntax of a `.res` file: frozen dataclasses, each with its span."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from resdsl.source import Span


@dataclass(frozen=True, slots=True)
class Node:
    """A piece of syntax and the source span it was read from."""

    span: Span

    def but(self, **changes) -> Node:
        """A copy with some fields changed."""
        return replace(self, **changes)


# --- expressions -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """An int, float, bool, string or shape (`3x224x224`) written in the source."""

    value: int | float | bool | str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Name(Node):
    """A name read in an expression: a param, a formal, a local, or a label naming a tensor."""

    id: str


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """An arithmetic operation, `left op right`."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Neg(Node):
    """`-operand`."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class Compare(Node):
    """A comparison, `left op right`: true or false."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Logic(Node):
    """`a and b`, `a or b`: both sides true or false; the right one is evaluated only when it decides."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not(Node):
    """`not operand`."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class Conditional(Node):
    """`then if condition else otherwise`."""

    then: Expr
    condition: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Pair(Node):
    """`key: value` inside a call, as in `steps(32000: 0.1)` or `groupnorm(32, eps: 1e-3)`."""

    key: Expr
    value: Expr


@dataclass(frozen=True, slots=True)
class Call(Node):
    """`func(args)`: a function of values (`min`, `range`, `steps`) or an op value with arguments (`groupnorm(32)`)."""

    func: str
    args: list[Expr | Pair]


Expr = Literal | Name | Binary | Neg | Compare | Logic | Not | Conditional | Call


@dataclass(frozen=True, slots=True)
class Kwarg(Node):
    """`name value` or `name: value`."""

    name: str
    value: Expr


# --- layers, blocks, shortcuts -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer(Node):
    """One layer: `conv1: conv 3x3, 64, stride 2`, an op value (`bn1: norm`) or a block call (`se: attn 256`).

    `args` keeps the order in which positional and keyword arguments were written.
    """

    label: str | None
    op: str
    op_span: Span
    args: list[Expr | Kwarg]
    label_parts: tuple[str | Expr, ...] = ()  # a label computed in a loop (`convs.{i}:`): text and expressions

    @property
    def positional(self) -> list[Expr]:
        return [a for a in self.args if not isinstance(a, Kwarg)]

    @property
    def keywords(self) -> list[Kwarg]:
        return [a for a in self.args if isinstance(a, Kwarg)]


@dataclass(frozen=True, slots=True)
class Let(Node):
    """A local value inside a block: `mid = width * base_width // 64`."""

    name: str
    value: Expr


@dataclass(frozen=True, slots=True)
class From(Node):
    """`from pre`: the next layer reads the tensor named `pre` instead of the current one; `from "paths.0.bn"`
    names a tensor by a dotted label (`quoted` is true)."""

    name: str
    name_span: Span
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class For(Node):
    """`for i in range(n) { ... }`: the body once for each value of `i`."""

    name: str
    iterable: Expr
    body: list[Statement]


@dataclass(frozen=True, slots=True)
class If(Node):
    """`if cond { ... } else { ... }`: the statements of one branch, chosen by a true-or-false value."""

    condition: Expr
    then: list[Statement]
    otherwise: list[Statement]


Statement = Layer | Let | From | For | If


@dataclass(frozen=True, slots=True)
class Formal(Node):
    """A formal of a block or shortcut option, with its default if it has one."""

    name: str
    default: Expr | None


@dataclass(frozen=True, slots=True)
class BlockDef(Node):
    """`block name(formals) { body }`; `override` replaces the block of that name that the spec inherits."""

    name: str
    formals: list[Formal]
    body: list[Statement]
    override: bool = False


@dataclass(frozen=True, slots=True)
class BlockAlias(Node):
    """`block plain_basic = basic(shortcut: none)`: a block with arguments bound."""

    name: str
    target: str
    bindings: list[Kwarg]
    override: bool = False


@dataclass(frozen=True, slots=True)
class Case(Node):
    """The `same` or `changed` case of a shortcut option."""

    kind: str
    body: list[Statement]


@dataclass(frozen=True, slots=True)
class ShortcutDef(Node):
    """A shortcut option: what `add shortcut` adds when the block keeps its shape (`same`) or changes it."""

    name: str
    formals: list[Formal]
    cases: list[Case]
    override: bool = False

    def case(self, kind: str) -> Case | None:
        return next((c for c in self.cases if c.kind == kind), None)


@dataclass(frozen=True, slots=True)
class ParamDecl(Node):
    """`param name = value`; without a value, `--set name=VALUE` must give one."""

    name: str
    value: Expr | None


# --- networks ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage(Node):
    """`layer2: 4 x 128, stride 2`: depth, width and per-stage options."""

    label: str | None
    depth: Expr
    width: Expr | None
    options: list[Kwarg]


@dataclass(frozen=True, slots=True)
class Drop(Node):
    """`-groups` among a child spec's stage options: the parent's option of that name is not inherited."""

    name: str


@dataclass(frozen=True, slots=True)
class Stages(Node):
    """A network's `stages (options) { ... }`: its options, its stage lines (None: inherited), the options it drops."""

    options: list[Kwarg]
    items: list[Stage] | None
    drops: list[Drop] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Setting(Node):
    """One line of a `train` section: `lr 0.1` or `augment pad 4, crop 32, flip`."""

    key: str
    args: list[Expr]
    kwargs: list[Kwarg]


@dataclass(frozen=True, slots=True)
class Section(Node):
    """A network's `stem { ... }` or `head { ... }`."""

    layers: list[Statement]


@dataclass(frozen=True, slots=True)
class Train(Node):
    """A network's `train { ... }` section: one setting per line."""

    settings: list[Setting]


@dataclass(frozen=True, slots=True)
class Extends(Node):
    """`extends "parent.res" (assigns)`: the file a network inherits from and the params it sets there."""

    path: str
    assigns: list[Kwarg]


@dataclass(frozen=True, slots=True)
class InputShape(Node):
    """`input 3x224x224`: the input's dimensions."""

    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Network(Node):
    """`network name { ... }`; a section not given is None (`repeated`: the spans of sections given twice)."""

    name: str
    extends: Extends | None
    input: InputShape | None = None
    stem: Section | None = None
    stages: Stages | None = None
    head: Section | None = None
    train: Train | None = None
    repeated: list[Span] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Module(Node):
    """A whole file."""

    params: list[ParamDecl]
    blocks: list[BlockDef | BlockAlias]
    shortcuts: list[ShortcutDef]
    networks: list[Network]
