"""Lowering a resolved program to the graph IR: stages expand into blocks, blocks into ops.

Shapes are inferred as nodes are added, because a shortcut option picks its `same` or
`changed` case from the shapes the residual branch produces.
"""

from __future__ import annotations

from difflib import get_close_matches

import networkx as nx

from resdsl import ast
from resdsl.diagnostics import Note, Reporter
from resdsl.expr import EvalError, Value, describe, evaluate
from resdsl.ir.graph import Scope
from resdsl.ir.ops import MAX_WIDTH, OPS, REQUIRED, Args, coerce, fmt
from resdsl.passes.shapes import infer_node
from resdsl.resolve import Program, prelude_source
from resdsl.source import Span

MAX_LAYERS = 100_000
_STAGE_KEYS = ("block", "shortcut", "stride")
_INTERNAL_OPS = ("input", "output", "add")


class _TooLarge(Exception):
    pass


class _Block:
    """A block type after following aliases: its definition plus bound arguments."""

    def __init__(self, definition: ast.BlockDef, bound: dict[str, ast.Kwarg], shortcut: ast.Kwarg | None):
        self.definition = definition
        self.bound = bound
        self.shortcut = shortcut


def lower_program(program: Program, reporter: Reporter) -> nx.DiGraph:
    """The IR of the program's network; errors go to `reporter`."""
    return _Lowering(program, reporter).lower()


class _Lowering:
    def __init__(self, program: Program, reporter: Reporter) -> None:
        self.program = program
        self.reporter = reporter
        self.graph = nx.DiGraph(name=program.network.name, stages=[])
        self.layers = 0
        self.prelude = prelude_source().path

    # --- network ---------------------------------------------------------------------

    def lower(self) -> nx.DiGraph:
        network = self.program.network
        if network.input is None:
            self.reporter.error(network.span, f"network '{network.name}' has no `input CxHxW` line")
            return self.graph
        dims = network.input.dims
        if len(dims) != 3 or min(dims) <= 0:
            self.reporter.error(network.input.span, f"input must be CxHxW with positive sizes, got {fmt(dims)}")
            return self.graph
        if max(dims) > MAX_WIDTH:
            self.reporter.error(network.input.span, f"input size {max(dims):,} is over the limit of {MAX_WIDTH:,}")
            return self.graph
        self.graph.graph["input_shape"] = dims
        self._add("input", "input", {"shape": dims}, [], Scope("io", "input"), network.input.span)
        try:
            current = "input"
            if network.stem:
                current = self._sequence(network.stem.layers, "", current, dict(self.program.params),
                                         Scope("stem", "stem"), None)
            if network.stages:
                current = self._stages(network.stages, current)
            if network.head:
                current = self._sequence(network.head.layers, "", current, dict(self.program.params),
                                         Scope("head", "head"), None)
        except _TooLarge:
            return self.graph
        self.graph.graph["output"] = current
        self._add("output", "output", {}, [current], Scope("io", "output"), network.span)
        infer_node(self.graph, "output", self._on_error)
        return self.graph

    def _stages(self, stages: ast.Stages, current: str) -> str:
        items = stages.items or []
        if not items:
            self.reporter.error(stages.span, "stages has no stage lines (e.g. `layer1: 3 x 64`)")
        sizes = [self._stage_size(stage) for stage in items]
        total = sum(depth for depth, _ in sizes if depth)
        if total > MAX_LAYERS:
            self.reporter.error(stages.span, f"{total:,} blocks in all is over the limit of {MAX_LAYERS:,}")
            raise _TooLarge
        for number, (stage, (depth, width)) in enumerate(zip(items, sizes, strict=True), start=1):
            name = stage.label or f"layer{number}"
            if name in self.graph.graph["stages"] or self.graph.has_node(name):
                self.reporter.error(stage.span, f"stage name '{name}' is used twice")
                continue
            self.graph.graph["stages"].append(name)
            self._no_repeats(stages.options, "stages option")
            self._no_repeats(stage.options, "stage option")
            options = {o.name: o for o in stages.options} | {o.name: o for o in stage.options}
            current = self._stage(name, stage, depth, width, options, current)
        return current

    def _stage_size(self, stage: ast.Stage) -> tuple[int | None, int | None]:
        if stage.width is None:
            value = self._eval(stage.depth, dict(self.program.params))
            if isinstance(value, tuple) and len(value) == 2:
                return self._positive(value[0], stage.depth.span, "depth"), value[1]
            if value is not None:
                self.reporter.error(stage.depth.span, "a stage is `DEPTH x WIDTH`, e.g. `3 x 64`")
            return None, None
        env = dict(self.program.params)
        depth = self._positive(self._eval(stage.depth, env), stage.depth.span, "depth")
        width = self._positive(self._eval(stage.width, env), stage.width.span, "width")
        return depth, width

    def _positive(self, value: Value | None, span: Span, what: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.reporter.error(span, f"stage {what} must be a positive integer, got {describe(value)}")
            return None
        return value

    def _stage(self, name: str, stage: ast.Stage, depth: int | None, width: int | None,
               options: dict[str, ast.Kwarg], current: str) -> str:
        block_opt = options.get("block")
        if block_opt is None:
            self.reporter.error(stage.span, "no block type for this stage; add `block: basic` to the "
                                            "stages defaults or the stage line")
            return self._failed_stage(name, stage, current)
        block = self._block_type(block_opt)
        shortcut_opt = options.get("shortcut")
        if block is not None and block.shortcut is not None:
            shortcut_opt = block.shortcut
        shortcut = self._shortcut(shortcut_opt) if shortcut_opt else None
        if shortcut_opt is None and block is not None and _uses_shortcut(block.definition):
            self.reporter.error(stage.span, "no shortcut option for this stage; add `shortcut: A` "
                                            "(or none, B, C, D) to the stages defaults or the stage line")
        stride = 1
        if "stride" in options:
            stride = self._positive(self._eval(options["stride"].value, dict(self.program.params)),
                                    options["stride"].value.span, "stride")
        if block is None or depth is None or width is None or stride is None:
            return self._failed_stage(name, stage, current)
        extra = {k: v for k, v in options.items() if k not in _STAGE_KEYS}
        formals = {f.name for f in block.definition.formals}
        if "width" in extra:
            self.reporter.error(extra.pop("width").span, "the stage line gives the width: `DEPTH x WIDTH`")
        if "width" not in formals:
            self.reporter.error(block_opt.value.span, f"block '{block_opt.value.id}' has no 'width' parameter "
                                                      "to take the stage's width")
            return self._failed_stage(name, stage, current)
        for key, option in extra.items():
            if key not in formals:
                self.reporter.error(option.span, f"block '{block_opt.value.id}' has no parameter '{key}' "
                                                 f"(it takes {', '.join(sorted(formals))})")
        if stride != 1 and "stride" not in formals:
            self.reporter.error(options["stride"].span, f"block '{block_opt.value.id}' takes no stride")
        for index in range(depth):
            args = {key: option.value for key, option in extra.items() if key in formals}
            scope = Scope("stage", name, index, "main", block_opt.value.id,
                          shortcut.name if shortcut else None)
            current = self._block(block, args, width, stride if index == 0 else 1, shortcut,
                                  f"{name}.{index}.", current, scope, stage.span)
        return current

    def _failed_stage(self, name: str, stage: ast.Stage, current: str) -> str:
        """A stage that could not be built stands as one placeholder: drawn, and unknown to the checks after it."""
        return self._poison(f"{name}.", current, Scope("stage", name), stage.span)

    # --- name lookups ----------------------------------------------------------------

    def _block_type(self, option: ast.Kwarg) -> _Block | None:
        if not isinstance(option.value, ast.Name):
            self.reporter.error(option.value.span, "block expects a block name, e.g. basic or bottleneck")
            return None
        bound: dict[str, ast.Kwarg] = {}
        shortcut: ast.Kwarg | None = None
        name = option.value.id
        referrer: ast.BlockAlias | None = None
        for _ in range(MAX_LAYERS):
            definition = self.program.blocks.get(name)
            if definition is None:
                span = option.value.span if referrer is None else referrer.span
                self.reporter.error(span, self._unknown("block", name, self.program.blocks))
                return None
            if isinstance(definition, ast.BlockDef):
                formals = {f.name for f in definition.formals}
                for binding in bound.values():
                    if binding.name not in formals:
                        self.reporter.error(binding.span, f"block '{definition.name}' has no parameter "
                                                          f"'{binding.name}' (it takes {', '.join(sorted(formals))})")
                        return None
                return _Block(definition, bound, shortcut)
            referrer = definition
            for binding in definition.bindings:
                if binding.name == "shortcut":
                    shortcut = shortcut or binding
                else:
                    bound.setdefault(binding.name, binding)
            name = definition.target
        self.reporter.error(option.value.span, f"block '{option.value.id}' is an alias of itself")
        return None

    def _shortcut(self, option: ast.Kwarg) -> ast.ShortcutDef | None:
        if not isinstance(option.value, ast.Name):
            self.reporter.error(option.value.span, "shortcut expects an option: none, A, B, C or D")
            return None
        found = self.program.shortcuts.get(option.value.id)
        if found is None:
            self.reporter.error(option.value.span, self._unknown("shortcut option", option.value.id,
                                                                 self.program.shortcuts))
        return found

    def _no_repeats(self, items: list[ast.Kwarg], what: str) -> None:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                self.reporter.error(item.span, f"{what} '{item.name}' is given twice")
            seen.add(item.name)

    @staticmethod
    def _unknown(kind: str, name: str, known) -> str:
        close = get_close_matches(name, list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(known))})"
        return f"unknown {kind} '{name}'{hint}"

    # --- blocks ------------------------------------------------------------------------

    def _block(self, block: _Block, stage_args: dict[str, ast.Expr], width: int, stride: int,
               shortcut: ast.ShortcutDef | None, prefix: str, current: str, scope: Scope,
               origin: Span) -> str:
        definition = block.definition
        env: dict[str, Value] = dict(self.program.params)
        given: dict[str, Value | None] = {"width": width, "stride": stride}
        global_env = dict(self.program.params)
        for name, binding in block.bound.items():
            given[name] = self._eval(binding.value, global_env)
        for name, expr in stage_args.items():
            if name not in block.bound:
                given[name] = self._eval(expr, global_env)
        for formal in definition.formals:
            if formal.name in given:
                value = given[formal.name]
            elif formal.default is not None:
                value = self._eval(formal.default, env)
            else:
                self.reporter.error(origin, f"block '{definition.name}' needs a value for '{formal.name}'")
                value = None
            if value is None:
                return self._poison(prefix, current, scope, origin)
            env[formal.name] = value
        block_input = current
        for statement in definition.body:
            if isinstance(statement, ast.Let):
                value = self._eval(statement.value, env)
                if value is None:
                    return self._poison(prefix, current, scope, origin)
                env[statement.name] = value
            elif statement.op == "add" and _is_shortcut_add(statement):
                current = self._residual(statement, env, prefix, block_input, current, scope,
                                         shortcut, origin)
            else:
                current = self._layer(statement, env, prefix, current, scope, origin)
        return current

    def _residual(self, statement: ast.Layer, env: dict[str, Value], prefix: str, block_input: str,
                  current: str, scope: Scope, shortcut: ast.ShortcutDef | None, origin: Span) -> str:
        """`add shortcut`: the stage's shortcut option picks its case from the shapes."""
        if shortcut is None:
            return current
        in_shape = self.graph.nodes[block_input]["shape"]
        out_shape = self.graph.nodes[current]["shape"]
        if in_shape is None or out_shape is None:
            return self._poison(prefix, current, scope, origin)
        stride = env.get("stride", 1)
        kept = in_shape == out_shape and stride == 1
        case = shortcut.same if kept else shortcut.changed
        if case is None:
            return current
        shortcut_env: dict[str, Value] = dict(self.program.params) | {
            "in_channels": in_shape[0], "out_channels": out_shape[0], "stride": stride}
        shortcut_scope = Scope(scope.section, scope.stage, scope.block, "shortcut", scope.block_type,
                               scope.shortcut)
        branch_end = self._sequence([s for s in case if not _is_identity(s)], prefix + "downsample.",
                                    block_input, shortcut_env, shortcut_scope, origin)
        add = self._name(prefix, statement.label or "add", statement.span)
        node_id = self._add(add, "add", {}, [current, branch_end], scope, statement.span, origin)
        shape = infer_node(self.graph, node_id, lambda node, message: None)
        if shape is None and self.graph.nodes[branch_end]["shape"] is not None:
            sc_shape = fmt(self.graph.nodes[branch_end]["shape"])
            if branch_end == block_input:
                message = (f"{node_id}: identity shortcut across a shape change: the block's input is "
                           f"{fmt(in_shape)} but its residual branch gives {fmt(out_shape)}")
            else:
                message = (f"{node_id}: shortcut {shortcut.name} gives {sc_shape} but the residual "
                           f"branch gives {fmt(out_shape)}")
            self.graph.nodes[node_id]["error"] = message.split(": ", 1)[1]
            self._report(statement.span, origin, message, shortcut.span)
        return node_id

    def _sequence(self, statements: list[ast.Statement], prefix: str, current: str,
                  env: dict[str, Value], scope: Scope, origin: Span | None) -> str:
        for statement in statements:
            if isinstance(statement, ast.Let):
                value = self._eval(statement.value, env)
                if value is not None:
                    env[statement.name] = value
                continue
            current = self._layer(statement, env, prefix, current, scope, origin)
        return current

    # --- layers ------------------------------------------------------------------------

    def _layer(self, layer: ast.Layer, env: dict[str, Value], prefix: str, current: str,
               scope: Scope, origin: Span | None) -> str:
        op = OPS.get(layer.op)
        if op is None or layer.op in _INTERNAL_OPS:
            if layer.op in self.program.blocks:
                message = f"'{layer.op}' is a block; blocks are used in stages (`block: {layer.op}`)"
            elif layer.op == "add":
                message = "add takes `shortcut` (write `add shortcut`)"
            elif layer.op in _INTERNAL_OPS:
                message = f"'{layer.op}' is added by the compiler and cannot be written"
            else:
                public = [name for name in OPS if name not in _INTERNAL_OPS]
                message = self._unknown("op", layer.op, public)
            self._report(layer.op_span, origin, message)
            return self._poison(prefix, current, scope, layer.span)
        args = self._bind(layer, op, env, origin)
        if layer.op in ("conv", "linear"):
            self.layers += 1
            if self.layers > MAX_LAYERS:
                self.reporter.error(origin or layer.span, f"more than {MAX_LAYERS:,} conv and linear layers")
                raise _TooLarge
        shape = self.graph.nodes[current]["shape"]
        if layer.op == "linear" and shape is not None and len(shape) == 3 and shape[1:] == (1, 1):
            flatten = self._name(prefix, "flatten", layer.span)
            current = self._add(flatten, "flatten", {}, [current], scope, layer.span, origin)
            infer_node(self.graph, current, self._on_error)
        if layer.label and self.graph.has_node(prefix + layer.label):
            self._report(layer.span, origin, f"layer name '{prefix + layer.label}' is used twice")
        node_id = self._name(prefix, layer.label or layer.op, layer.span)
        self._add(node_id, layer.op, args, [current], scope, layer.span, origin)
        infer_node(self.graph, node_id, self._on_error)
        return node_id

    def _bind(self, layer: ast.Layer, op, env: dict[str, Value], origin: Span | None) -> Args | None:
        """Evaluate a layer's arguments against the op's signature."""
        positional = [p for p in op.signature if p.positional]
        flags = {p.name for p in op.signature if p.kind == "bool"}
        values: dict[str, tuple[Value, Span]] = {}
        ok = True
        slots = iter(positional)
        for arg in layer.args:
            if isinstance(arg, ast.Name) and arg.id in flags and arg.id not in env:
                values[arg.id] = (True, arg.span)
                continue
            slot = next(slots, None)
            if slot is None:
                self._report(arg.span, origin,
                             f"{layer.op} takes {len(positional)} positional argument(s); this one is extra")
                ok = False
                continue
            value = self._eval(arg, env, origin)
            ok = ok and value is not None
            values[slot.name] = (value, arg.span)
        names = {p.name: p for p in op.signature}
        for kwarg in layer.kwargs:
            if kwarg.name in values:
                self._report(kwarg.span, origin, f"{layer.op} argument '{kwarg.name}' is given twice")
                ok = False
                continue
            if kwarg.name not in names:
                self._report(kwarg.span, origin, self._unknown(f"argument of {layer.op}", kwarg.name, names))
                ok = False
                continue
            value = self._eval(kwarg.value, env, origin)
            ok = ok and value is not None
            values[kwarg.name] = (value, kwarg.value.span)
        args: Args = {}
        for param in op.signature:
            if param.name in values:
                value, span = values[param.name]
                if value is None:
                    continue
                try:
                    args[param.name] = coerce(param.kind, value)
                except ValueError as error:
                    self._report(span, origin, f"{layer.op} argument '{param.name}': {error}")
                    ok = False
            elif param.default is REQUIRED:
                self._report(layer.op_span, origin, f"{layer.op} needs its {param.name} argument")
                ok = False
            else:
                args[param.name] = None if param.default is None else coerce(param.kind, param.default)
        return op.complete(args) if ok else None

    # --- graph helpers -----------------------------------------------------------------

    def _add(self, node_id: str, op: str, args: Args | None, sources: list[str], scope: Scope,
             span: Span, origin: Span | None = None) -> str:
        self.graph.add_node(node_id, op=op, args=args, shape=None, scope=scope, span=span, origin=origin)
        for index, source in enumerate(sources):
            self.graph.add_edge(source, node_id, index=index)
        if op == "input":
            self.graph.nodes[node_id]["shape"] = args["shape"]
        return node_id

    def _poison(self, prefix: str, current: str, scope: Scope, span: Span) -> str:
        """A placeholder node of unknown shape, so later checks skip what depends on it."""
        node_id = self._name(prefix, "unknown", span)
        return self._add(node_id, "identity", None, [current], scope, span)

    def _name(self, prefix: str, label: str, span: Span) -> str:
        node_id = prefix + label
        if not self.graph.has_node(node_id):
            return node_id
        count = 1
        while self.graph.has_node(f"{node_id}_{count}"):
            count += 1
        return f"{node_id}_{count}"

    def _eval(self, expr: ast.Expr, env: dict[str, Value], origin: Span | None = None) -> Value | None:
        try:
            return evaluate(expr, env)
        except EvalError as error:
            self._report(error.span, origin, error.message)
            return None

    def _where(self, span: Span, origin: Span | None) -> Span:
        """Report in the user's file: code from the prelude is reported at the stage line."""
        return origin if (origin is not None and span.path == self.prelude) else span

    def _on_error(self, node: str, message: str) -> None:
        attrs = self.graph.nodes[node]
        attrs["error"] = message
        # "linear expects ..." needs no "linear: " in front; "layer2.0.conv1: ..." does.
        said = message.startswith(f"{attrs['op']} ") and node.split("_")[0] == attrs["op"]
        self._report(attrs["span"], attrs["origin"], message if said else f"{node}: {message}")

    def _report(self, span: Span, origin: Span | None, message: str, definition: Span | None = None) -> None:
        notes: list[Note] = []
        if origin is not None and span.path == self.prelude:
            notes.append(Note(span, "in this built-in definition"))
        elif origin is not None and origin != span:
            notes.append(Note(origin, "instantiated here"))
        if definition is not None and definition.path != self.prelude:
            notes.append(Note(definition, "shortcut option defined here"))
        self.reporter.error(self._where(span, origin), message, tuple(notes))


def _is_shortcut_add(layer: ast.Layer) -> bool:
    return len(layer.args) == 1 and isinstance(layer.args[0], ast.Name) and layer.args[0].id == "shortcut"


def _is_identity(statement: ast.Statement) -> bool:
    return isinstance(statement, ast.Layer) and statement.op == "identity"


def _uses_shortcut(definition: ast.BlockDef) -> bool:
    return any(isinstance(s, ast.Layer) and _is_shortcut_add(s) for s in definition.body)
