"""Emitting statements into the graph: ops, ops and blocks given as values, block calls, `from`, `add shortcut`.

A statement list runs from a current tensor: each layer reads it (multi-input ops also read the
tensors they name) and its output becomes the current tensor. A layer's label names its output, so
that later layers can read it (`mul input`, `add shortcut(pre)`, `from x`).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
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
from resdsl.ir.graph import GraphBuilder, Site, TooLarge
from resdsl.ir.instantiate import BindError, Instance, bind_formals, block_instance, unknown
from resdsl.ir.ops import OPS, Linear, Op
from resdsl.limits import MAX_CALL_DEPTH, MAX_INSTANCES, MAX_INSTANTIATED, MAX_WIDTH
from resdsl.resolve import Program, prelude_source
from resdsl.source import Span

SHORTCUT_GROUP = "downsample"  # the shortcut's layers are under `<block>.downsample.`, as in torchvision and timm
PROJECTS = "projects"  # bound in a stage's block: whether its shortcut has layers (timm's `downsample is not None`)


@dataclass
class BlockFrame:
    """What `add shortcut` needs of the stage block it is in: the block's input, its stride and shortcut option,
    and whether the block has added its shortcut already."""

    input: str
    stride: int
    shortcut: Instance | None
    added: bool = False
    projects: bool | None = None  # the value `projects` was given, if the block reads it


class Emitter:
    """Runs statement lists of one program into a GraphBuilder, reporting errors where the user can fix them."""

    def __init__(self, program: Program, builder: GraphBuilder, diagnostics: Diagnostics) -> None:
        self.program = program
        self.builder = builder
        self.diagnostics = diagnostics
        self.prelude = prelude_source().path
        names: dict[str, Value] = {name: Callee("op", name) for name, op in OPS.items() if not op.internal}
        names |= {name: Callee("block", name) for name in program.blocks}
        names["none"] = NONE
        self.globals: Mapping[str, Value] = ChainMap(program.param_values, names)
        self.calls: list[str] = []
        self.checked_shortcuts: set[str] = set()
        self.instances = 0  # uses of blocks and shortcut options so far (MAX_INSTANCES)
        self.instantiated = 0  # syntax nodes of definitions instantiated so far (MAX_INSTANTIATED)
        self._sizes: dict[int, int] = {}
        self._reads_projects: dict[int, bool] = {}
        self.loops = 0  # loops the statements being emitted are in
        # a trial run that only finds the shapes at `add shortcut` (to tell a block whether its shortcut projects)
        self.probe: list[tuple[tuple[int, ...] | None, tuple[int, ...] | None, int]] | None = None

    # --- statement lists -------------------------------------------------------------------

    def run(self, statements: list[ast.Statement], site: Site, current: str, local: dict[str, Value],
            frame: BlockFrame | None = None) -> str:
        """Emit `statements` reading `current`; returns the tensor they end with."""
        scope = ChainMap(local, self.globals)
        for statement in statements:
            if isinstance(statement, ast.Let):
                value = self.evaluate(statement.value, scope, site.origin)
                if value is None:
                    return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
                local[statement.name] = value
            elif isinstance(statement, ast.From):
                if statement.quoted:
                    value = self.labelled(statement.name, scope, statement.name_span, site.origin)
                    if value is None:
                        return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
                else:
                    value = scope.get(statement.name)
                if not isinstance(value, Tensor):
                    got = "not defined" if value is None else describe(value)
                    self.report(statement.name_span, site.origin, f"`from` needs a tensor — a layer's label or "
                                                                  f"`input` — but '{statement.name}' is {got}")
                    return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
                current = value.node
            elif isinstance(statement, ast.For):
                current = self.loop(statement, scope, site, current, local, frame)
            elif isinstance(statement, ast.If):
                condition = self.evaluate(statement.condition, scope, site.origin)
                if not isinstance(condition, bool):
                    if condition is not None:
                        self.report(statement.condition.span, site.origin, "the condition of `if` must be true or "
                                                                           f"false (a comparison), not "
                                                                           f"{describe(condition)}")
                    return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
                current = self.run(statement.then if condition else statement.otherwise, site, current, local, frame)
            elif _is_shortcut_add(statement):
                current = self.residual(statement, scope, site, current, frame)
            else:
                current = self.layer(statement, scope, site, current)
        return current

    def loop(self, statement: ast.For, scope: ChainMap, site: Site, current: str, local: dict[str, Value],
             frame: BlockFrame | None) -> str:
        """`for i in range(n) { ... }`: the body once for each `i`, each pass counted as an instantiation."""
        steps = self.range_of(statement.iterable, scope, site.origin)
        if steps is None:
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        size = self._sizes.get(id(statement))
        if size is None:
            size = self._sizes[id(statement)] = sum(syntax_size(s) for s in statement.body) + 1
        for value in steps:
            self.instantiated += size
            if self.instantiated > MAX_INSTANTIATED:
                raise TooLarge(too_much_instantiated(), site.origin or statement.span)
            local[statement.name] = value
            self.loops += 1
            try:
                current = self.run(statement.body, site, current, local, frame)
            finally:
                self.loops -= 1
        return current

    def range_of(self, expr: ast.Expr, scope: ChainMap, origin: Span | None) -> range | None:
        """The integers a loop runs over: `range(stop)` or `range(start, stop)`."""
        if not (isinstance(expr, ast.Call) and expr.func == "range" and 1 <= len(expr.args) <= 2
                and not any(isinstance(a, ast.Pair) for a in expr.args)):
            self.report(expr.span, origin, "a loop runs over `range(n)` or `range(start, stop)`")
            return None
        bounds = [self.evaluate(a, scope, origin) for a in expr.args]
        if None in bounds:
            return None
        for arg, bound in zip(expr.args, bounds, strict=True):
            if isinstance(bound, bool) or not isinstance(bound, int):
                self.report(arg.span, origin, f"range() takes integers, not {describe(bound)}")
                return None
            if abs(bound) > MAX_WIDTH:
                self.report(arg.span, origin, f"range({bound:,}) is beyond the limit of {MAX_WIDTH:,} steps")
                return None
        return range(*bounds)

    def labelled(self, pattern: str, scope: ChainMap, span: Span, origin: Span | None) -> Tensor | None:
        """The tensor of a label written as a string (`"paths.0.bn"`, `"sp.{i - 1}"`), reported if there is none."""
        try:
            label = interpolate(pattern, scope, span)
        except EvalError as error:
            self.report(error.span, origin, error.message)
            return None
        value = scope.get(label)
        if isinstance(value, Tensor):
            return value
        from difflib import get_close_matches

        known = [name for name, v in scope.items() if isinstance(v, Tensor)]
        close = get_close_matches(label, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        self.report(span, origin, f"no layer labelled '{label}' comes before this in the body{hint}")
        return None

    def layer(self, layer: ast.Layer, scope: ChainMap, site: Site, current: str) -> str:
        if layer.label_parts:
            label = self.label_of(layer, scope, site)
            if label is None:
                return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
            layer = layer.but(label=label, label_parts=())
        callee = self.callee(layer, scope, site)
        if isinstance(callee, NoLayer):
            if layer.args:
                self.report(layer.args[0].span, site.origin, f"'{layer.op}' is none here, which adds no layer and "
                                                             "takes no arguments; leave them out, or put the layer "
                                                             f"under `if {layer.op} != none {{ … }}`")
                return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
            self.name_tensor(layer, current, scope, site)  # a label on `none` names the tensor passed through
            return current
        if callee is None:
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        op = OPS[callee.name] if callee.kind == "op" else None
        arguments = self.arguments(layer, scope, site, op)
        if arguments is None:
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        if op is not None:
            node = self.op_layer(layer, op, list(callee.arguments) + arguments, site, current, callee.span)
        else:
            node = self.call_block(layer, callee, arguments, site, current)
        self.name_tensor(layer, node, scope, site)
        return node

    def label_of(self, layer: ast.Layer, scope: ChainMap, site: Site) -> str | None:
        """A label with computed parts (`convs.{i}`): each part an integer or a name."""
        text = ""
        for part in layer.label_parts:
            if isinstance(part, str):
                text += part
                continue
            value = self.evaluate(part, scope, site.origin)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | str):
                self.report(part.span, site.origin, f"a part of a label is an integer or a name, not "
                                                    f"{describe(value)}")
                return None
            text += str(value)
        return text

    def callee(self, layer: ast.Layer, scope: ChainMap, site: Site) -> Callee | NoLayer | None:
        """What a layer's op name means here: an op or block given as a value (`norm`, `attn`), `none`, or the
        op or block of that name (a parameter holding a number does not hide the op `dropout`)."""
        name = layer.op
        value = scope.get(name)
        if isinstance(value, NoLayer) or (isinstance(value, Callee) and value.kind != "shortcut"):
            return value
        if (name in OPS and not OPS[name].internal and name != "add") or name in self.program.blocks:
            return Callee("op" if name in OPS else "block", name)
        if name == "add":
            message = "add takes a tensor (`add x`) or the block's shortcut (`add shortcut`)"
        elif name in OPS:
            message = f"'{name}' is added by the compiler and cannot be written"
        elif name in self.program.shortcuts or isinstance(value, Callee):
            message = f"'{name}' is a shortcut option; a stage chooses it with `shortcut: {name}`"
        elif value is not None:
            message = f"'{name}' is {describe(value)}, not an op or a block"
        else:
            known = [n for n, op in OPS.items() if not op.internal] + list(self.program.blocks)
            message = unknown("op or block", name, known)
        self.report(layer.op_span, site.origin, message)
        return None

    def arguments(self, layer: ast.Layer, scope: ChainMap, site: Site, op: Op | None) -> list[Argument] | None:
        """The layer's arguments, evaluated; a bare name of a boolean argument (`bias`) means true."""
        flags = {p.name for p in op.signature if p.kind == "bool"} if op else set()
        arguments = []
        ok = True
        for arg in layer.args:
            if isinstance(arg, ast.Kwarg):
                value, name, span = self.evaluate(arg.value, scope, site.origin), arg.name, arg.span
            elif isinstance(arg, ast.Name) and arg.id in flags and arg.id not in scope:
                value, name, span = True, arg.id, arg.span
            else:
                value, name, span = self.evaluate(arg, scope, site.origin), None, arg.span
                if isinstance(value, str) and op is not None and op.arity != 1:  # `add "paths.0.bn"`
                    value = self.labelled(value, scope, span, site.origin)
            ok = ok and value is not None
            arguments.append(Argument(name, value, span))
        stray = misplaced(arguments)
        if stray is not None:
            self.report(stray.span, site.origin, f"a positional argument cannot follow a keyword argument of "
                                                 f"{layer.op}")
            return None
        return arguments if ok else None

    def op_layer(self, layer: ast.Layer, op: Op, arguments: list[Argument], site: Site, current: str,
                 written: Span | None = None) -> str:
        """Add an op's node; `written` is where an op value's arguments were bound (`norm: groupnorm(32)`), where
        an error about the arguments as a whole points."""
        bound = op.bind(arguments, written or layer.op_span)
        for span, message in bound.errors:
            self.report(span, site.origin, message)
        sources = [current, *(t.node for t in bound.tensors)]
        if not bound.errors and ((op.arity == 2 and len(sources) != 2) or (op.arity is None and len(sources) < 2)):
            wanted = "one tensor" if op.arity == 2 else "one or more tensors"
            extra = " (or `add shortcut` in a block a stage uses)" if op.name == "add" else ""
            named = f", but this names {len(sources) - 1}" if len(sources) > 1 else ""
            self.report(layer.op_span, site.origin, f"{op.name} takes {wanted} besides the current one, named "
                                                    f"as in `{op.name} x`{extra}{named}")
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        if len(set(sources)) != len(sources):
            self.report(layer.op_span, site.origin, f"{op.name} reads the same tensor twice (a tensor it names is "
                                                    "the current one, or is named twice)")
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        shape = self.builder.graph.nodes[current]["shape"]
        if isinstance(op, Linear) and shape is not None and len(shape) == 3 and shape[1:] == (1, 1):
            flatten = self.builder.fresh_id(site.prefix, "flatten")
            current = sources[0] = self.builder.add(flatten, OPS["flatten"], {}, [current], site.scope, layer.span,
                                                    site.origin)
        node = self.node_id(layer, site, op.name)
        if node is None:
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        args = None if bound.errors else bound.args
        return self.builder.add(node, op, args, sources, site.scope, layer.span, site.origin)

    def call_block(self, layer: ast.Layer, callee: Callee, arguments: list[Argument], site: Site,
                   current: str) -> str:
        """Inline a block called from a body (`se: attn 256`): its layers go under the call's label."""
        try:
            instance = block_instance(callee, self.program, self.globals, layer.op_span)
        except BindError as error:
            return self.failed(error, layer, site, current)
        name = instance.definition.name
        if uses_shortcut(instance.definition):
            self.report(layer.op_span, site.origin, f"'{layer.op}' is a block that adds a shortcut, so stages use it "
                                                    f"(`block: {layer.op}`); only blocks without one are layers")
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        if name in self.calls or len(self.calls) >= MAX_CALL_DEPTH:
            reason = (f"block '{name}' calls itself" if name in self.calls
                      else f"blocks call each other more than {MAX_CALL_DEPTH} deep, the limit; write some of "
                           "these blocks' layers out in the block that calls them")
            self.report(layer.op_span, site.origin, reason)
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        label = self.node_id(layer, site, name)
        if label is None:
            return self.builder.placeholder(site.prefix, current, site.scope, layer.span)
        child = Site(label + ".", site.scope, site.origin or layer.span)
        self.builder.graph.graph.setdefault("calls", {})[label] = name
        return self.block_body(instance, tuple(arguments), child, current, layer.op_span)

    def block_body(self, instance: Instance, arguments: tuple[Argument, ...], site: Site, current: str,
                   span: Span, stage: bool = False, shortcut: Instance | None = None) -> str:
        """Bind a block's arguments and emit its body from `current`; a stage's block may `add shortcut`."""
        definition = instance.definition
        self.instantiate(definition, len(instance.arguments) + len(arguments), site.origin or span)
        try:
            values = bind_formals(definition, instance.arguments + arguments, self.globals, span)
        except BindError as error:
            for where, message in error.problems:
                self.report(where, site.origin, message)
            return self.builder.placeholder(site.prefix, current, site.scope, span)
        shape = self.builder.graph.nodes[current]["shape"]
        if shape is None:
            return self.builder.placeholder(site.prefix, current, site.scope, span)
        local: dict[str, Value] = {**values, "input": Tensor(current), "in_channels": shape[0]}
        stride = values.get("stride", 1)
        frame = BlockFrame(current, stride if isinstance(stride, int) else 1, shortcut) if stage else None
        if frame is not None and PROJECTS not in values and self.reads_projects(definition):
            projects = False if self.probe is not None else self.projects(instance, arguments, site, current, span,
                                                                           shortcut)
            local[PROJECTS] = frame.projects = projects
        self.calls.append(definition.name)
        try:
            return self.run(definition.body, site, current, local, frame)
        finally:
            self.calls.pop()

    def reads_projects(self, definition: ast.BlockDef) -> bool:
        known = self._reads_projects.get(id(definition))
        if known is None:
            known = self._reads_projects[id(definition)] = reads_name(definition, PROJECTS)
        return known

    def projects(self, instance: Instance, arguments: tuple[Argument, ...], site: Site, current: str, span: Span,
                 shortcut: Instance | None) -> bool:
        """Whether the shortcut of this stage block has layers: a trial run of the block on a scratch graph finds
        the shapes `add shortcut` sees, which pick the shortcut's case."""
        if shortcut is None or not shortcut.definition.cases:
            return False
        trial = Emitter(self.program, GraphBuilder("trial", lambda *error: None), Diagnostics(self.program.sources))
        trial.probe, trial.calls = [], list(self.calls)
        shape = self.builder.graph.nodes[current]["shape"]
        start = trial.builder.add("input", OPS["input"], {"shape": shape}, [], site.scope, span)
        try:
            trial.block_body(instance, arguments, site, start, span, stage=True, shortcut=shortcut)
        except TooLarge:
            return False
        if not trial.probe:
            return False
        in_shape, out_shape, stride = trial.probe[0]
        kept = in_shape == out_shape and stride == 1
        return _has_layers(shortcut.definition.case("same" if kept else "changed"))

    # --- the residual add ------------------------------------------------------------------

    def residual(self, statement: ast.Layer, scope: ChainMap, site: Site, current: str,
                 frame: BlockFrame | None) -> str:
        """`add shortcut` or `add shortcut(t)`: the stage's shortcut option picks its case from the shapes.

        Its layers read `t` (the block's input by default); an identity case always adds the block's input,
        so that a pre-activation unit keeps its clean identity path.
        """
        if frame is None:
            self.report(statement.span, site.origin, "`add shortcut` belongs in a block that a stage uses, "
                                                     "not in the stem, the head or a block called from another")
            return current
        if frame.added:
            self.report(statement.span, site.origin, "a block adds its shortcut once; this is a second "
                                                     "`add shortcut` (`add x` adds another tensor)")
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        frame.added = True
        if self.probe is not None:
            nodes = self.builder.graph.nodes
            self.probe.append((nodes[frame.input]["shape"], nodes[current]["shape"], frame.stride))
            return current
        if current == frame.input:
            self.report(statement.span, site.origin, "the residual branch is empty: `add shortcut` comes before "
                                                     "any layer of the block, so it would add the input to itself")
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        if frame.shortcut is None:
            return current  # no option chosen: reported at the stage line
        reads = frame.input
        argument = statement.positional[0]
        if isinstance(argument, ast.Call):
            if len(argument.args) != 1 or isinstance(argument.args[0], ast.Pair):
                self.report(argument.span, site.origin, "shortcut(...) takes one tensor: the one its layers read")
                return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
            value = self.evaluate(argument.args[0], scope, site.origin)
            if isinstance(value, str):  # `add shortcut("pre.act")`
                value = self.labelled(value, scope, argument.args[0].span, site.origin)
                if value is None:
                    return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
            if not isinstance(value, Tensor):
                if value is not None:
                    self.report(argument.args[0].span, site.origin,
                                f"shortcut(...) reads a tensor — a layer's label or `input` — not {describe(value)}")
                return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
            reads = value.node
        option = frame.shortcut
        definition = option.definition
        if not self.complete_cases(definition):
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        if not definition.cases:
            return current  # `shortcut none`: the plain net
        nodes = self.builder.graph.nodes
        in_shape, out_shape = nodes[frame.input]["shape"], nodes[current]["shape"]
        if in_shape is None or out_shape is None or nodes[reads]["shape"] is None:
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        kept = in_shape == out_shape and frame.stride == 1
        case = definition.case("same" if kept else "changed")
        if frame.projects is not None and frame.projects != _has_layers(case):
            self.report(statement.span, site.origin, f"this block's shape depends on `{PROJECTS}`: it was told its "
                                                     f"shortcut {'projects' if frame.projects else 'does not project'}"
                                                     ", but with that its branch gives another shape")
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        self.instantiate(definition, len(option.arguments), site.origin or statement.span)
        try:
            values = bind_formals(definition, option.arguments, self.globals, statement.span)
        except BindError as error:
            for where, message in error.problems:
                self.report(where, site.origin, message, definition.span)
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        values |= {"in_channels": in_shape[0], "out_channels": out_shape[0], "stride": frame.stride}
        layers = [s for s in case.body if not (isinstance(s, ast.Layer) and s.op == "identity")]
        shortcut_scope = replace(site.scope, branch="shortcut")
        branch_end = frame.input
        taken = f"{site.prefix}{SHORTCUT_GROUP}"
        if layers and taken in nodes:
            self.report(nodes[taken]["span"], site.origin, f"'{SHORTCUT_GROUP}' names the shortcut's layers in a "
                                                           f"block (`{SHORTCUT_GROUP}.0`, as in torchvision), and "
                                                           f"shortcut option {definition.name} has layers here; "
                                                           "rename this layer")
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        if layers:
            group = Site(f"{site.prefix}{SHORTCUT_GROUP}.", shortcut_scope, site.origin)
            branch_end = self.run(layers, group, reads, {**values, "input": Tensor(reads)})
        node = self.node_id(statement, site, "add")
        if node is None:
            return self.builder.placeholder(site.prefix, current, site.scope, statement.span)
        self.builder.add(node, OPS["add"], {}, [current, branch_end], site.scope, statement.span, site.origin,
                         quiet=True)
        nodes[node]["residual"] = True
        if nodes[node]["shape"] is None and nodes[branch_end]["shape"] is not None:
            branch = nodes[branch_end]["shape"]
            if branch_end == frame.input:
                message = (f"identity shortcut across a shape change: the block's input is {_fmt(in_shape)} "
                           f"but its residual branch gives {_fmt(out_shape)}")
            else:
                message = (f"shortcut {definition.name} gives {_fmt(branch)} but the residual branch gives "
                           f"{_fmt(out_shape)}")
            nodes[node]["error"] = message
            self.report(statement.span, site.origin, f"{node}: {message}", definition.span)
        return node

    def complete_cases(self, definition: ast.ShortcutDef) -> bool:
        """A shortcut option has both cases, or none at all (no shortcut); reported once per option."""
        kinds = [case.kind for case in definition.cases]
        missing = [kind for kind in ("same", "changed") if kind not in kinds] if kinds else []
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        stray = [layer for case in definition.cases if len(case.body) > 1 for layer in case.body
                 if isinstance(layer, ast.Layer) and layer.op == "identity"]
        if definition.name not in self.checked_shortcuts:
            self.checked_shortcuts.add(definition.name)
            for kind in missing:
                what = "keeps its shape" if kind == "same" else "changes channels or stride"
                self.diagnostics.error(definition.span, f"shortcut option '{definition.name}' has no `{kind}` case: "
                                                        f"say what the shortcut is when the block {what} (`{kind} "
                                                        "{ identity }`, or layers)")
            for kind in repeated:
                self.diagnostics.error(definition.span, f"shortcut option '{definition.name}' gives its `{kind}` "
                                                        "case twice")
            for layer in stray:
                self.diagnostics.error(layer.span, "`identity` is a whole case (`same { identity }` adds the "
                                                   "block's input); a case with layers reads `t` already, so "
                                                   "leave it out")
        return not missing and not repeated and not stray

    # --- helpers ---------------------------------------------------------------------------

    def instantiate(self, definition: ast.BlockDef | ast.ShortcutDef, arguments: int, span: Span) -> None:
        """Count a use of a definition against MAX_INSTANCES and MAX_INSTANTIATED: the work of a block is its size,
        whatever it holds (formals, lets, `none` layers) — the limits on layers alone would not bound it."""
        size = self._sizes.get(id(definition))
        if size is None:
            size = self._sizes[id(definition)] = syntax_size(definition)
        self.instances += 1
        self.instantiated += size + arguments
        if self.instances > MAX_INSTANCES:
            raise TooLarge(too_many_instances(), span)
        if self.instantiated > MAX_INSTANTIATED:
            raise TooLarge(too_much_instantiated(), span)

    def node_id(self, layer: ast.Layer, site: Site, base: str) -> str | None:
        """The id of a layer's node: its label under the site's prefix, or a fresh `op`, `op_1`, ..."""
        if layer.label is None:
            return self.builder.fresh_id(site.prefix, base)
        node = site.prefix + layer.label
        problem = self.builder.path_problem(node, site.scope.stage if site.scope.section == "stage" else None)
        if problem:
            if self.loops and node in self.builder.graph:
                problem += " (in a loop, give the label a part computed from the index: `convs.{i}:`)"
            self.report(layer.span, site.origin, problem)
            return None
        return node

    def name_tensor(self, layer: ast.Layer, node: str, scope: ChainMap, site: Site) -> None:
        """A label names the layer's output for later layers of the same body: a plain one (`pre:`) as a name, a
        dotted one (`paths.0.bn:`) as a string (`from "paths.0.bn"`)."""
        label = layer.label
        local = scope.maps[0]
        if label is None:
            return
        if not label.isidentifier():
            local[label] = Tensor(node)
            return
        if (label in local and not isinstance(local[label], Tensor)) or label in self.program.param_values:
            self.report(layer.span, site.origin, f"label '{label}' is also the name of a value here (a parameter "
                                                 "or a local); rename one of them")
            return
        local[label] = Tensor(node)

    def failed(self, error: BindError, layer: ast.Layer, site: Site, current: str) -> str:
        for span, message in error.problems:
            self.report(span, site.origin, message)
        return self.builder.placeholder(site.prefix, current, site.scope, layer.span)

    def evaluate(self, expr: ast.Expr, scope: Mapping[str, Value], origin: Span | None) -> Value | None:
        try:
            return evaluate(expr, scope)
        except EvalError as error:
            self.report(error.span, origin, error.message)
            return None

    def report(self, span: Span, origin: Span | None, message: str, definition: Span | None = None) -> None:
        """Report in the user's file: an error in the prelude is reported at the stage line, with a note."""
        notes: list[Note] = []
        if origin is not None and span.path == self.prelude:
            notes.append(Note(span, "in this built-in definition"))
        elif origin is not None and origin != span:
            notes.append(Note(origin, "instantiated here"))
        if definition is not None and definition.path != self.prelude:
            notes.append(Note(definition, "shortcut option defined here"))
        where = origin if (origin is not None and span.path == self.prelude) else span
        self.diagnostics.error(where, message, tuple(notes))


def _is_shortcut_add(layer: ast.Layer) -> bool:
    if layer.op != "add" or len(layer.args) != 1:
        return False
    arg = layer.args[0]
    if isinstance(arg, ast.Call):
        return arg.func == "shortcut"
    return isinstance(arg, ast.Name) and arg.id == "shortcut"


def syntax_size(root: ast.Node) -> int:
    """The number of syntax nodes in `root`, counted without recursion (an expression may be deeply nested)."""
    size, stack = 0, [root]
    while stack:
        node = stack.pop()
        size += 1
        for name in node.__slots__:
            value = getattr(node, name)
            if isinstance(value, ast.Node):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(item for item in value if isinstance(item, ast.Node))
    return size


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


def reads_name(root: ast.Node, name: str) -> bool:
    """Whether `name` is read anywhere under `root` (without recursion)."""
    stack: list[ast.Node] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name) and node.id == name:
            return True
        for slot in node.__slots__:
            value = getattr(node, slot)
            if isinstance(value, ast.Node):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(item for item in value if isinstance(item, ast.Node))
    return False


def _has_layers(case: ast.Case | None) -> bool:
    return case is not None and any(not (isinstance(s, ast.Layer) and s.op == "identity") for s in case.body)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
