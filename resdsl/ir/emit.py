"""Lowering, the emitting step: a block's or section's statements become graph nodes, shapes inferred as they go.

resdsl.ir.build decides what to emit (the stem, each stage's blocks, the head) and drives the `Emitter`
here through its public surface; the Emitter alone holds the graph being built and the counts the limits
read. A statement list runs from a current tensor: each layer reads it (multi-input ops also read the
tensors they name) and its output becomes the current tensor. A layer's label names its output, so
that later layers can read it (`mul input`, `add shortcut(pre)`, `from x`).
"""

from __future__ import annotations

import re
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from resdsl import ast
from resdsl.diagnostics import Diagnostics, Note
from resdsl.expr import (
    NONE,
    Argument,
    Callee,
    EvalError,
    NoLayer,
    Tensor,
    Value,
    describe,
    evaluate,
    interpolate,
    misplaced,
)
from resdsl.ir.graph import GraphBuilder, IRGraph, Scope, Site, TooLarge
from resdsl.ir.instantiate import BindError, BlockInstance, ShortcutInstance, bind_formals, block_instance, unknown
from resdsl.ir.ops import OPS, Linear, Op, Shape, fmt
from resdsl.limits import MAX_CALL_DEPTH, MAX_INSTANCES, MAX_INSTANTIATED, MAX_WIDTH
from resdsl.resolve import Program, prelude_source
from resdsl.source import Span

SHORTCUT_GROUP = "downsample"  # the shortcut's layers are under `<block>.downsample.`, as in torchvision and timm
PROJECTS = "projects"  # bound in a stage's block: whether its shortcut has layers (timm's `downsample is not None`)


@dataclass
class _BlockFrame:
    """What `add shortcut` needs of the stage block it is in: the block's input, its stride and shortcut option,
    and whether the block has added its shortcut already."""

    input: str
    stride: int
    shortcut: ShortcutInstance | None
    added: bool = False
    projects: bool | None = None  # the value `projects` was given, if the block reads it


@dataclass(frozen=True)
class Size:
    """How large the network is so far, in each unit a limit counts."""

    nodes: int
    weighted: int
    instances: int
    instantiated: int


class Emitter:
    """Emits the statement lists of one program into its graph, reporting errors where the user can fix them.

    The lowering (resdsl.ir.build) drives it: `start` adds the input, `body` emits the stem or the head,
    `stage_block` one block of a stage, `placeholder` stands for a stage that could not be built, `finish` adds
    the output. `graph` is the IR so far, `names` what the program's expressions can name, `size()` how large
    the network is so far. The rest is its own state.
    """

    def __init__(self, program: Program, diagnostics: Diagnostics) -> None:
        self._program = program
        self._diagnostics = diagnostics
        self._builder = GraphBuilder(program.network.name, self._shape_error)
        self._prelude = prelude_source().path
        names: dict[str, Value] = {name: Callee("op", name) for name, op in OPS.items() if not op.internal}
        names |= {name: Callee("block", name) for name in program.blocks}
        names["none"] = NONE
        self.names: ChainMap[str, Value] = ChainMap(program.param_values, names)
        self._calls: list[str] = []
        self._checked_shortcuts: set[str] = set()
        self._instances = 0  # uses of blocks and shortcut options so far (MAX_INSTANCES)
        self._instantiated = 0  # syntax nodes of definitions instantiated so far (MAX_INSTANTIATED)
        self._sizes: dict[int, int] = {}
        self._projects_read: dict[int, bool] = {}
        self._loops = 0  # loops the statements being emitted are in
        # a trial run that only finds the shapes at `add shortcut` (to tell a block whether its shortcut projects)
        self._probe: list[tuple[Shape | None, Shape | None, int]] | None = None

    # --- the public surface ----------------------------------------------------------------

    @property
    def graph(self) -> IRGraph:
        """The IR built so far."""
        return self._builder.graph

    def start(self, shape: Shape, span: Span, stages: list[str]) -> str:
        """Add the network's input node, keeping the names of `stages` for them; returns its id."""
        self._builder.graph.input_shape = shape
        if stages:
            self._builder.reserve_stages(stages)
        return self._builder.add("input", OPS["input"], {"shape": shape}, [], Scope("io", "input"), span)

    def body(self, statements: list[ast.Statement], scope: Scope, current: str) -> str:
        """Emit the stem's or the head's statements from `current`; returns the tensor they end with."""
        return self._run(statements, Site("", scope), current, {"input": Tensor(current)})

    def stage_block(self, instance: BlockInstance, arguments: tuple[Argument, ...], site: Site, current: str,
                    span: Span, shortcut: ShortcutInstance | None) -> str:
        """Emit one block of a stage from `current`; its `add shortcut` takes the stage's `shortcut` option."""
        return self._block_body(instance, arguments, site, current, span, stage=True, shortcut=shortcut)

    def placeholder(self, site: Site, current: str, span: Span) -> str:
        """A node of unknown shape standing for what could not be built, so later checks skip what depends on it."""
        return self._builder.placeholder(site.prefix, current, site.scope, span)

    def size(self) -> Size:
        """How large the network is so far (a stage refuses early what its blocks would bring over a limit)."""
        return Size(len(self._builder.graph), self._builder.weighted, self._instances, self._instantiated)

    def finish(self, current: str, span: Span) -> None:
        """Add the output node reading `current`; then, if nothing failed, report the outputs nothing reads."""
        self._builder.graph.output = current
        self._builder.add("output", OPS["output"], {}, [current], Scope("io", "output"), span)
        if not self._diagnostics.diagnostics:
            self._check_everything_is_read()

    # --- statement lists -------------------------------------------------------------------

    def _run(self, statements: list[ast.Statement], site: Site, current: str, local: dict[str, Value],
             frame: _BlockFrame | None = None) -> str:
        """Emit `statements` reading `current`; returns the tensor they end with."""
        scope = ChainMap(local, *self.names.maps)  # one level of maps: a lookup is the layer's hot path
        for statement in statements:
            if isinstance(statement, ast.Let):
                value = self._evaluate(statement.value, scope, site.origin)
                if value is None:
                    return self.placeholder(site, current, statement.span)
                local[statement.name] = value
            elif isinstance(statement, ast.From):
                if statement.quoted:
                    value = self._labelled(statement.name, scope, statement.name_span, site.origin)
                    if value is None:
                        return self.placeholder(site, current, statement.span)
                else:
                    value = scope.get(statement.name)
                if not isinstance(value, Tensor):
                    got = "not defined" if value is None else describe(value)
                    self._report(statement.name_span, site.origin, f"`from` needs a tensor — a layer's label or "
                                                                   f"`input` — but '{statement.name}' is {got}")
                    return self.placeholder(site, current, statement.span)
                current = value.node
            elif isinstance(statement, ast.For):
                current = self._loop(statement, scope, site, current, local, frame)
            elif isinstance(statement, ast.If):
                condition = self._evaluate(statement.condition, scope, site.origin)
                if not isinstance(condition, bool):
                    if condition is not None:
                        self._report(statement.condition.span, site.origin, "the condition of `if` must be true or "
                                                                            f"false (a comparison), not "
                                                                            f"{describe(condition)}")
                    return self.placeholder(site, current, statement.span)
                current = self._run(statement.then if condition else statement.otherwise, site, current, local, frame)
            elif _is_shortcut_add(statement):
                current = self._residual(statement, scope, site, current, frame)
            else:
                current = self._layer(statement, scope, site, current)
        return current

    def _loop(self, statement: ast.For, scope: ChainMap[str, Value], site: Site, current: str, local: dict[str, Value],
              frame: _BlockFrame | None) -> str:
        """`for i in range(n) { ... }`: the body once for each `i`, each pass counted as an instantiation."""
        steps = self._range_of(statement.iterable, scope, site.origin)
        if steps is None:
            return self.placeholder(site, current, statement.span)
        size = self._sizes.get(id(statement))
        if size is None:
            size = self._sizes[id(statement)] = sum(_syntax_size(s) for s in statement.body) + 1
        for value in steps:
            self._instantiated += size
            if self._instantiated > MAX_INSTANTIATED:
                raise TooLarge(too_much_instantiated(), site.origin or statement.span)
            local[statement.name] = value
            self._loops += 1
            try:
                current = self._run(statement.body, site, current, local, frame)
            finally:
                self._loops -= 1
        return current

    def _range_of(self, expr: ast.Expr, scope: ChainMap[str, Value], origin: Span | None) -> range | None:
        """The integers a loop runs over: `range(stop)` or `range(start, stop)`."""
        args = [a for a in expr.args if not isinstance(a, ast.Pair)] if isinstance(expr, ast.Call) else []
        if not (isinstance(expr, ast.Call) and expr.func == "range" and 1 <= len(args) == len(expr.args) <= 2):
            self._report(expr.span, origin, "a loop runs over `range(n)` or `range(start, stop)`")
            return None
        values = [value for value in (self._evaluate(a, scope, origin) for a in args) if value is not None]
        if len(values) < len(args):
            return None
        bounds: list[int] = []
        for arg, bound in zip(args, values, strict=True):
            if isinstance(bound, bool) or not isinstance(bound, int):
                self._report(arg.span, origin, f"range() takes integers, not {describe(bound)}")
                return None
            if abs(bound) > MAX_WIDTH:
                self._report(arg.span, origin, f"range({bound:,}) is beyond the limit of {MAX_WIDTH:,} steps")
                return None
            bounds.append(bound)
        return range(*bounds)

    def _labelled(self, pattern: str, scope: ChainMap[str, Value], span: Span, origin: Span | None) -> Tensor | None:
        """The tensor of a label written as a string (`"paths.0.bn"`, `"sp.{i - 1}"`), reported if there is none."""
        try:
            label = interpolate(pattern, scope, span)
        except EvalError as error:
            self._report(error.span, origin, error.message)
            return None
        value = scope.get(label)
        if isinstance(value, Tensor):
            return value
        from difflib import get_close_matches

        known = [name for name, v in scope.items() if isinstance(v, Tensor)]
        close = get_close_matches(label, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        self._report(span, origin, f"no layer labelled '{label}' comes before this in the body{hint}")
        return None

    def _layer(self, layer: ast.Layer, scope: ChainMap[str, Value], site: Site, current: str) -> str:
        if layer.label_parts:
            label = self._label_of(layer, scope, site)
            if label is None:
                return self.placeholder(site, current, layer.span)
            layer = replace(layer, label=label, label_parts=())
        callee = self._callee(layer, scope, site)
        if isinstance(callee, NoLayer):
            if layer.args:
                self._report(layer.args[0].span, site.origin, f"'{layer.op}' is none here, which adds no layer and "
                                                              "takes no arguments; leave them out, or put the layer "
                                                              f"under `if {layer.op} != none {{ … }}`")
                return self.placeholder(site, current, layer.span)
            self._name_tensor(layer, current, scope, site)  # a label on `none` names the tensor passed through
            return current
        if callee is None:
            return self.placeholder(site, current, layer.span)
        op = OPS[callee.name] if callee.kind == "op" else None
        arguments = self._arguments(layer, scope, site, op)
        if arguments is None:
            return self.placeholder(site, current, layer.span)
        if op is not None:
            node = self._op_layer(layer, op, list(callee.arguments) + arguments, site, current, callee.span)
        else:
            node = self._call_block(layer, callee, arguments, site, current)
        self._name_tensor(layer, node, scope, site)
        return node

    def _label_of(self, layer: ast.Layer, scope: ChainMap[str, Value], site: Site) -> str | None:
        """A label with computed parts (`convs.{i}`): each part an integer or a name."""
        text = ""
        for part in layer.label_parts:
            if isinstance(part, str):
                text += part
                continue
            value = self._evaluate(part, scope, site.origin)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | str):
                self._report(part.span, site.origin, f"a part of a label is an integer or a name, not "
                                                     f"{describe(value)}")
                return None
            text += str(value)
        return text

    def _callee(self, layer: ast.Layer, scope: ChainMap[str, Value], site: Site) -> Callee | NoLayer | None:
        """What a layer's op name means here: an op or block given as a value (`norm`, `attn`), `none`, or the
        op or block of that name (a parameter holding a number does not hide the op `dropout`)."""
        name = layer.op
        value = _lookup(scope, name)
        if isinstance(value, NoLayer) or (isinstance(value, Callee) and value.kind != "shortcut"):
            return value
        if (name in OPS and not OPS[name].internal and name != "add") or name in self._program.blocks:
            return Callee("op" if name in OPS else "block", name)
        if name == "add":
            message = "add takes a tensor (`add x`) or the block's shortcut (`add shortcut`)"
        elif name in OPS:
            message = f"'{name}' is added by the compiler and cannot be written"
        elif name in self._program.shortcuts or isinstance(value, Callee):
            message = f"'{name}' is a shortcut option; a stage chooses it with `shortcut: {name}`"
        elif value is not None:
            message = f"'{name}' is {describe(value)}, not an op or a block"
        else:
            known = [n for n, op in OPS.items() if not op.internal] + list(self._program.blocks)
            message = unknown("op or block", name, known)
        self._report(layer.op_span, site.origin, message)
        return None

    def _arguments(self, layer: ast.Layer, scope: ChainMap[str, Value], site: Site,
                   op: Op | None) -> list[Argument] | None:
        """The layer's arguments, evaluated; a bare name of a boolean argument (`bias`) means true."""
        flags = {p.name for p in op.signature if p.kind == "bool"} if op else set()
        arguments: list[Argument] = []
        ok = True
        for arg in layer.args:
            if isinstance(arg, ast.Kwarg):
                value, name, span = self._evaluate(arg.value, scope, site.origin), arg.name, arg.span
            elif isinstance(arg, ast.Name) and arg.id in flags and arg.id not in scope:
                value, name, span = True, arg.id, arg.span
            else:
                value, name, span = self._evaluate(arg, scope, site.origin), None, arg.span
                if isinstance(value, str) and op is not None and op.arity != 1:  # `add "paths.0.bn"`
                    value = self._labelled(value, scope, span, site.origin)
            if value is None:  # reported; the argument still takes its place for the order check below
                ok, value = False, NONE
            arguments.append(Argument(name, value, span))
        stray = misplaced(arguments)
        if stray is not None:
            self._report(stray.span, site.origin, f"a positional argument cannot follow a keyword argument of "
                                                  f"{layer.op}")
            return None
        return arguments if ok else None

    def _op_layer(self, layer: ast.Layer, op: Op, arguments: list[Argument], site: Site, current: str,
                  written: Span | None = None) -> str:
        """Add an op's node; `written` is where an op value's arguments were bound (`norm: groupnorm(32)`), where
        an error about the arguments as a whole points."""
        bound = op.bind(arguments, written or layer.op_span)
        for span, message in bound.errors:
            self._report(span, site.origin, message)
        sources = [current, *(t.node for t in bound.tensors)]
        if not bound.errors and ((op.arity == 2 and len(sources) != 2) or (op.arity is None and len(sources) < 2)):
            wanted = "one tensor" if op.arity == 2 else "one or more tensors"
            extra = " (or `add shortcut` in a block a stage uses)" if op.name == "add" else ""
            named = f", but this names {len(sources) - 1}" if len(sources) > 1 else ""
            self._report(layer.op_span, site.origin, f"{op.name} takes {wanted} besides the current one, named "
                                                     f"as in `{op.name} x`{extra}{named}")
            return self.placeholder(site, current, layer.span)
        if len(set(sources)) != len(sources):
            self._report(layer.op_span, site.origin, f"{op.name} reads the same tensor twice (a tensor it names is "
                                                     "the current one, or is named twice)")
            return self.placeholder(site, current, layer.span)
        shape = self._builder.graph.nodes[current].shape
        if isinstance(op, Linear) and shape is not None and len(shape) == 3 and shape[1:] == (1, 1):
            flatten = self._builder.fresh_id(site.prefix, "flatten")
            current = sources[0] = self._builder.add(flatten, OPS["flatten"], {}, [current], site.scope, layer.span,
                                                     site.origin)
        node = self._node_id(layer, site, op.name)
        if node is None:
            return self.placeholder(site, current, layer.span)
        args = None if bound.errors else bound.args
        return self._builder.add(node, op, args, sources, site.scope, layer.span, site.origin)

    def _call_block(self, layer: ast.Layer, callee: Callee, arguments: list[Argument], site: Site,
                    current: str) -> str:
        """Inline a block called from a body (`se: attn 256`): its layers go under the call's label."""
        try:
            instance = block_instance(callee, self._program, self.names, layer.op_span)
        except BindError as error:
            return self._unbound(error, site, current, layer.span)
        name = instance.definition.name
        if uses_shortcut(instance.definition):
            self._report(layer.op_span, site.origin, f"'{layer.op}' is a block that adds a shortcut, so stages use it "
                                                     f"(`block: {layer.op}`); only blocks without one are layers")
            return self.placeholder(site, current, layer.span)
        if name in self._calls or len(self._calls) >= MAX_CALL_DEPTH:
            cycle = self._calls[self._calls.index(name):] if name in self._calls else []
            through = f" ({' -> '.join([*cycle, name])})" if len(cycle) > 1 else ""  # b -> d -> b
            reason = (f"block '{name}' calls itself{through}" if cycle
                      else f"blocks call each other more than {MAX_CALL_DEPTH} deep, the limit; write some of "
                           "these blocks' layers out in the block that calls them")
            self._report(layer.op_span, site.origin, reason)
            return self.placeholder(site, current, layer.span)
        label = self._node_id(layer, site, name)
        if label is None:
            return self.placeholder(site, current, layer.span)
        child = Site(label + ".", site.scope, site.origin or layer.span)
        self._builder.graph.calls[label] = name
        return self._block_body(instance, tuple(arguments), child, current, layer.op_span)

    def _block_body(self, instance: BlockInstance, arguments: tuple[Argument, ...], site: Site, current: str,
                    span: Span, stage: bool = False, shortcut: ShortcutInstance | None = None) -> str:
        """Bind a block's arguments and emit its body from `current`; a stage's block may `add shortcut`."""
        definition = instance.definition
        self._instantiate(definition, len(instance.arguments) + len(arguments), site.origin or span)
        try:
            values = bind_formals(definition, instance.arguments + arguments, self.names, span)
        except BindError as error:
            return self._unbound(error, site, current, span)
        shape = self._builder.graph.nodes[current].shape
        if shape is None:
            return self.placeholder(site, current, span)
        local: dict[str, Value] = {**values, "input": Tensor(current), "in_channels": shape[0]}
        stride = values.get("stride", 1)
        frame = _BlockFrame(current, stride if isinstance(stride, int) else 1, shortcut) if stage else None
        if frame is not None and PROJECTS not in values and self._reads_projects(definition):
            projects = False if self._probe is not None else self._projects(instance, arguments, site, current, span,
                                                                            shortcut)
            local[PROJECTS] = frame.projects = projects
        self._calls.append(definition.name)
        try:
            return self._run(definition.body, site, current, local, frame)
        finally:
            self._calls.pop()

    def _reads_projects(self, definition: ast.BlockDef) -> bool:
        known = self._projects_read.get(id(definition))
        if known is None:
            known = self._projects_read[id(definition)] = _reads_name(definition, PROJECTS)
        return known

    def _projects(self, instance: BlockInstance, arguments: tuple[Argument, ...], site: Site, current: str, span: Span,
                  shortcut: ShortcutInstance | None) -> bool:
        """Whether the shortcut of this stage block has layers: a trial run of the block on a scratch graph finds
        the shapes `add shortcut` sees, which pick the shortcut's case."""
        if shortcut is None or not shortcut.definition.cases:
            return False
        trial = Emitter(self._program, Diagnostics(self._program.sources))
        trial._probe, trial._calls = [], list(self._calls)
        shape = self._builder.graph.nodes[current].shape
        start = trial._builder.add("input", OPS["input"], {"shape": shape}, [], site.scope, span)
        try:
            trial._block_body(instance, arguments, site, start, span, stage=True, shortcut=shortcut)
        except TooLarge:
            return False
        if not trial._probe:
            return False
        in_shape, out_shape, stride = trial._probe[0]
        kept = in_shape == out_shape and stride == 1
        return _has_layers(shortcut.definition.case("same" if kept else "changed"))

    # --- the residual add ------------------------------------------------------------------

    def _residual(self, statement: ast.Layer, scope: ChainMap[str, Value], site: Site, current: str,
                  frame: _BlockFrame | None) -> str:
        """`add shortcut` or `add shortcut(t)`: the stage's shortcut option picks its case from the shapes.

        Its layers read `t` (the block's input by default); an identity case always adds the block's input,
        so that a pre-activation unit keeps its clean identity path.
        """
        if frame is None:
            self._report(statement.span, site.origin, "`add shortcut` belongs in a block that a stage uses, "
                                                      "not in the stem, the head or a block called from another")
            return current
        if frame.added:
            self._report(statement.span, site.origin, "a block adds its shortcut once; this is a second "
                                                      "`add shortcut` (`add x` adds another tensor)")
            return self.placeholder(site, current, statement.span)
        frame.added = True
        if self._probe is not None:
            nodes = self._builder.graph.nodes
            self._probe.append((nodes[frame.input].shape, nodes[current].shape, frame.stride))
            return current
        if current == frame.input:
            self._report(statement.span, site.origin, "the residual branch is empty: `add shortcut` comes before "
                                                      "any layer of the block, so it would add the input to itself")
            return self.placeholder(site, current, statement.span)
        if frame.shortcut is None:
            return current  # no option chosen: reported at the stage line
        reads = self._shortcut_reads(statement.positional[0], scope, site, frame)
        if reads is None:
            return self.placeholder(site, current, statement.span)
        option = frame.shortcut
        definition = option.definition
        if not self._complete_cases(definition):
            return self.placeholder(site, current, statement.span)
        if not definition.cases:
            return current  # `shortcut none`: the plain net
        nodes = self._builder.graph.nodes
        in_shape, out_shape = nodes[frame.input].shape, nodes[current].shape
        if in_shape is None or out_shape is None or nodes[reads].shape is None:
            return self.placeholder(site, current, statement.span)
        kept = in_shape == out_shape and frame.stride == 1
        case = definition.case("same" if kept else "changed")
        assert case is not None  # both cases are there: checked by _complete_cases
        if frame.projects is not None and frame.projects != _has_layers(case):
            self._report(statement.span, site.origin, f"this block's shape depends on `{PROJECTS}`: it was told its "
                                                      f"shortcut {'projects' if frame.projects else 'does not project'}"
                                                      ", but with that its branch gives another shape")
            return self.placeholder(site, current, statement.span)
        self._instantiate(definition, len(option.arguments), site.origin or statement.span)
        try:
            values = bind_formals(definition, option.arguments, self.names, statement.span)
        except BindError as error:
            return self._unbound(error, site, current, statement.span, definition.span)
        values |= {"in_channels": in_shape[0], "out_channels": out_shape[0], "stride": frame.stride}
        layers = [s for s in case.body if not (isinstance(s, ast.Layer) and s.op == "identity")]
        shortcut_scope = replace(site.scope, branch="shortcut")
        branch_end = frame.input
        taken = f"{site.prefix}{SHORTCUT_GROUP}"
        if layers and taken in nodes:
            self._report(nodes[taken].span, site.origin, f"'{SHORTCUT_GROUP}' names the shortcut's layers in a "
                                                            f"block (`{SHORTCUT_GROUP}.0`, as in torchvision), and "
                                                            f"shortcut option {definition.name} has layers here; "
                                                            "rename this layer")
            return self.placeholder(site, current, statement.span)
        if layers:
            group = Site(f"{site.prefix}{SHORTCUT_GROUP}.", shortcut_scope, site.origin)
            branch_end = self._run(layers, group, reads, {**values, "input": Tensor(reads)})
        node = self._node_id(statement, site, "add")
        if node is None:
            return self.placeholder(site, current, statement.span)
        self._builder.add(node, OPS["add"], {}, [current, branch_end], site.scope, statement.span, site.origin,
                          quiet=True)
        nodes[node].residual = True
        branch = nodes[branch_end].shape
        if nodes[node].shape is None and branch is not None:
            if branch_end == frame.input:
                message = (f"identity shortcut across a shape change: the block's input is {fmt(in_shape)} "
                           f"but its residual branch gives {fmt(out_shape)}")
            else:
                message = (f"shortcut {definition.name} gives {fmt(branch)} but the residual branch gives "
                           f"{fmt(out_shape)}")
            nodes[node].error = message
            self._report(statement.span, site.origin, f"{node}: {message}", definition.span)
        return node

    def _shortcut_reads(self, argument: ast.Expr, scope: ChainMap[str, Value], site: Site,
                        frame: _BlockFrame) -> str | None:
        """The tensor the shortcut's layers read: the block's input, or `t` of `add shortcut(t)`; None if reported."""
        if not isinstance(argument, ast.Call):
            return frame.input
        if len(argument.args) != 1 or isinstance(argument.args[0], ast.Pair):
            self._report(argument.span, site.origin, "shortcut(...) takes one tensor: the one its layers read")
            return None
        value = self._evaluate(argument.args[0], scope, site.origin)
        if isinstance(value, str):  # `add shortcut("pre.act")`
            value = self._labelled(value, scope, argument.args[0].span, site.origin)
        if not isinstance(value, Tensor):
            if value is not None:
                self._report(argument.args[0].span, site.origin,
                             f"shortcut(...) reads a tensor — a layer's label or `input` — not {describe(value)}")
            return None
        return value.node

    def _complete_cases(self, definition: ast.ShortcutDef) -> bool:
        """A shortcut option has both cases, or none at all (no shortcut); reported once per option."""
        kinds = [case.kind for case in definition.cases]
        missing = [kind for kind in ("same", "changed") if kind not in kinds] if kinds else []
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        stray = [layer for case in definition.cases if len(case.body) > 1 for layer in case.body
                 if isinstance(layer, ast.Layer) and layer.op == "identity"]
        if definition.name not in self._checked_shortcuts:
            self._checked_shortcuts.add(definition.name)
            for kind in missing:
                what = "keeps its shape" if kind == "same" else "changes channels or stride"
                self._diagnostics.error(definition.span, f"shortcut option '{definition.name}' has no `{kind}` case: "
                                                         f"say what the shortcut is when the block {what} (`{kind} "
                                                         "{ identity }`, or layers)")
            for kind in repeated:
                self._diagnostics.error(definition.span, f"shortcut option '{definition.name}' gives its `{kind}` "
                                                         "case twice")
            for layer in stray:
                self._diagnostics.error(layer.span, "`identity` is a whole case (`same { identity }` adds the "
                                                    "block's input); a case with layers reads `t` already, so "
                                                    "leave it out")
        return not missing and not repeated and not stray

    # --- helpers ---------------------------------------------------------------------------

    def _instantiate(self, definition: ast.BlockDef | ast.ShortcutDef, arguments: int, span: Span) -> None:
        """Count a use of a definition against MAX_INSTANCES and MAX_INSTANTIATED: the work of a block is its size,
        whatever it holds (formals, lets, `none` layers) — the limits on layers alone would not bound it."""
        size = self._sizes.get(id(definition))
        if size is None:
            size = self._sizes[id(definition)] = _syntax_size(definition)
        self._instances += 1
        self._instantiated += size + arguments
        if self._instances > MAX_INSTANCES:
            raise TooLarge(too_many_instances(), span)
        if self._instantiated > MAX_INSTANTIATED:
            raise TooLarge(too_much_instantiated(), span)

    def _node_id(self, layer: ast.Layer, site: Site, base: str) -> str | None:
        """The id of a layer's node: its label under the site's prefix, or a fresh `op`, `op_1`, ..."""
        if layer.label is None:
            return self._builder.fresh_id(site.prefix, base)
        node = site.prefix + layer.label
        problem = self._builder.path_problem(node, site.scope.stage if site.scope.section == "stage" else None)
        if problem:
            if self._loops and node in self._builder.graph:
                problem += " (in a loop, give the label a part computed from the index: `convs.{i}:`)"
            self._report(layer.span, site.origin, problem)
            return None
        return node

    def _name_tensor(self, layer: ast.Layer, node: str, scope: ChainMap[str, Value], site: Site) -> None:
        """A label names the layer's output for later layers of the same body: a plain one (`pre:`) as a name, a
        dotted one (`paths.0.bn:`) as a string (`from "paths.0.bn"`)."""
        label = layer.label
        local = scope.maps[0]
        if label is None:
            return
        if not label.isidentifier():
            local[label] = Tensor(node)
            return
        if (label in local and not isinstance(local[label], Tensor)) or label in self._program.param_values:
            self._report(layer.span, site.origin, f"label '{label}' is also the name of a value here (a parameter "
                                                  "or a local); rename one of them")
            return
        local[label] = Tensor(node)

    def _unbound(self, error: BindError, site: Site, current: str, span: Span, definition: Span | None = None) -> str:
        """Report arguments that do not fit a definition; a placeholder stands for what it would have added."""
        for where, message in error.problems:
            self._report(where, site.origin, message, definition)
        return self.placeholder(site, current, span)

    def _evaluate(self, expr: ast.Expr, scope: Mapping[str, Value], origin: Span | None) -> Value | None:
        try:
            return evaluate(expr, scope)
        except EvalError as error:
            self._report(error.span, origin, error.message)
            return None

    def _check_everything_is_read(self) -> None:
        """A layer whose output nothing reads is a mistake (a branch left dangling), though it would count params."""
        graph = self._builder.graph
        for node, attrs in graph.nodes.items():
            if not graph.succ[node] and not attrs.op.internal:
                self._report(attrs.span, attrs.origin, f"nothing reads the output of '{node}': this branch "
                             "is computed (and counts params and MACs) but never used; use it (e.g. `add` or `concat` "
                             "it) or remove it")

    def _shape_error(self, node: str, span: Span, origin: Span | None, message: str) -> None:
        # An unlabelled node (`linear`, `slice_channels_2`) is named by its message ("linear expects ..."); a
        # labelled one (`layer2.0.conv1`) is named in front of it.
        op = self._builder.graph.nodes[node].op.name
        said = message.startswith(f"{op} ") and re.fullmatch(rf"{op}(_\d+)?", node.rpartition(".")[2])
        self._report(span, origin, message if said else f"{node}: {message}")

    def _report(self, span: Span, origin: Span | None, message: str, definition: Span | None = None) -> None:
        """Report in the user's file: an error in the prelude is reported at the stage line, with a note."""
        notes: list[Note] = []
        if origin is not None and span.path == self._prelude:
            notes.append(Note(span, "in this built-in definition"))
        elif origin is not None and origin != span:
            notes.append(Note(origin, "instantiated here"))
        if definition is not None and definition.path != self._prelude:
            notes.append(Note(definition, "shortcut option defined here"))
        where = origin if (origin is not None and span.path == self._prelude) else span
        self._diagnostics.error(where, message, tuple(notes))


def _lookup(scope: ChainMap[str, Value], name: str) -> Value | None:
    """`scope.get(name)` without ChainMap's generic lookups, which cost more than the rest of a `none` layer."""
    for names in scope.maps:
        if name in names:
            return names[name]
    return None


def _is_shortcut_add(layer: ast.Layer) -> bool:
    if layer.op != "add" or len(layer.args) != 1:
        return False
    arg = layer.args[0]
    if isinstance(arg, ast.Call):
        return arg.func == "shortcut"
    return isinstance(arg, ast.Name) and arg.id == "shortcut"


def _syntax_size(root: ast.Node) -> int:
    """The number of syntax nodes in `root`."""
    return sum(1 for _ in _walk(root))


def too_many_instances(count: int | None = None) -> str:
    where = f"this stage brings the uses of blocks and shortcut options to {count:,}, over" if count else (
        "the uses of blocks and shortcut options pass here")
    return f"{where} the limit of {MAX_INSTANCES:,} for one network; use fewer blocks"


def too_much_instantiated(count: int | None = None) -> str:
    where = (f"this stage brings the blocks and shortcut options instantiated to {count:,} syntax nodes, over"
             if count else "the blocks and shortcut options instantiated here pass")
    return (f"{where} the limit of {MAX_INSTANTIATED:,} syntax nodes (a definition's size, once per use); use fewer "
            "blocks, or smaller ones")


def uses_shortcut(definition: ast.BlockDef) -> bool:
    """Whether the block adds a shortcut anywhere in its body (in a loop or an `if` too)."""
    stack: list[ast.Statement] = list(definition.body)
    while stack:
        statement = stack.pop()
        if isinstance(statement, ast.Layer) and _is_shortcut_add(statement):
            return True
        if isinstance(statement, ast.For):
            stack += statement.body
        elif isinstance(statement, ast.If):
            stack += statement.then + statement.otherwise
    return False


def _reads_name(root: ast.Node, name: str) -> bool:
    """Whether `name` is read anywhere under `root`."""
    return any(isinstance(node, ast.Name) and node.id == name for node in _walk(root))


def _walk(root: ast.Node) -> Iterator[ast.Node]:
    """The syntax nodes under `root`, without recursion (an expression may be deeply nested)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        for slot in node.__slots__:
            value = getattr(node, slot)
            if isinstance(value, ast.Node):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(item for item in value if isinstance(item, ast.Node))


def _has_layers(case: ast.Case | None) -> bool:
    return case is not None and any(not (isinstance(s, ast.Layer) and s.op == "identity") for s in case.body)
