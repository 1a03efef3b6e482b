"""Lowering a resolved program to the graph IR: the stem, stages expanded into blocks, the head.

Three steps per stage: instantiate (the block and shortcut option named by the stage's options,
through aliases), bind (width, stride and the other options to their parameters), emit (the
block bodies, by resdsl.ir.emit). Shapes are inferred as nodes are added, because a shortcut
option picks its `same` or `changed` case from the shapes the residual branch produces.
"""

from __future__ import annotations

import re
from collections import ChainMap
from dataclasses import dataclass

from resdsl import ast
from resdsl.diagnostics import Diagnostics, Note
from resdsl.expr import Argument, Callee, EvalError, Tensor, Value, describe, evaluate, interpolate, literal
from resdsl.ir.emit import Emitter, too_many_instances, too_much_instantiated, uses_shortcut
from resdsl.ir.graph import (
    COMPILER_NODES,
    GraphBuilder,
    IRGraph,
    Scope,
    Site,
    TooLarge,
    too_many_layers,
    too_many_weighted,
)
from resdsl.ir.instantiate import BindError, Instance, block_instance, duplicate_formals, shortcut_instance, unknown
from resdsl.ir.names import check_path
from resdsl.ir.ops import OPS, fmt
from resdsl.limits import (
    MAX_BLOCKS,
    MAX_INSTANCES,
    MAX_INSTANTIATED,
    MAX_NODES,
    MAX_STAGES,
    MAX_WEIGHTED_LAYERS,
    MAX_WIDTH,
)
from resdsl.resolve import Program
from resdsl.source import Span

_STAGE_KEYS = ("block", "shortcut", "stride", "blocks")


def lower_program(program: Program, diagnostics: Diagnostics) -> IRGraph:
    """The IR of the program's network; errors go to `diagnostics`."""
    network = program.network
    emitter = Emitter(program, GraphBuilder(network.name, lambda *error: _shape_error(emitter, *error)), diagnostics)
    builder = emitter.builder
    _check_definitions(program, diagnostics)
    if network.input is None:
        diagnostics.error(network.span, f"network '{network.name}' has no `input CxHxW` line")
        return builder.graph
    dims = network.input.dims
    if len(dims) != 3 or min(dims) <= 0:
        diagnostics.error(network.input.span, f"input must be CxHxW with positive sizes, got {fmt(dims)}")
        return builder.graph
    if max(dims) > MAX_WIDTH:
        diagnostics.error(network.input.span, f"input size {max(dims):,} is over the limit of {MAX_WIDTH:,} for "
                                                  "channels or a side; use a smaller input")
        return builder.graph
    builder.graph.graph["input_shape"] = dims
    if network.stages and network.stages.items:
        builder.reserve_stages(_stage_names(network.stages.items))
    current = builder.add("input", OPS["input"], {"shape": dims}, [], Scope("io", "input"), network.input.span)
    try:
        if network.stem:
            current = emitter.run(network.stem.layers, Site("", Scope("stem", "stem")), current,
                                  {"input": Tensor(current)})
        if network.stages:
            current = _stages(emitter, network.stages, current)
        if network.head:
            current = emitter.run(network.head.layers, Site("", Scope("head", "head")), current,
                                  {"input": Tensor(current)})
    except TooLarge as error:
        diagnostics.error(error.span, str(error))
        return builder.graph
    builder.graph.graph["output"] = current
    builder.add("output", OPS["output"], {}, [current], Scope("io", "output"), network.span)
    if not diagnostics.diagnostics:
        _check_everything_is_read(emitter)
    return builder.graph


def _check_everything_is_read(emitter: Emitter) -> None:
    """A layer whose output nothing reads is a mistake (a branch left dangling), though it would count params."""
    graph = emitter.builder.graph
    for node, attrs in graph.nodes.items():
        if not graph.succ[node] and node != "output":
            emitter.report(attrs["span"], attrs["origin"], f"nothing reads the output of '{node}': this branch "
                           "is computed (and counts params and MACs) but never used; use it (e.g. `add` or `concat` "
                           "it) or remove it")


def _shape_error(emitter: Emitter, node: str, span: Span, origin: Span | None, message: str) -> None:
    # An unlabelled node (`linear`, `slice_channels_2`) is named by its message ("linear expects ..."); a
    # labelled one (`layer2.0.conv1`) is named in front of it.
    op = emitter.builder.graph.nodes[node]["op"].name
    said = message.startswith(f"{op} ") and re.fullmatch(rf"{op}(_\d+)?", node.rpartition(".")[2])
    emitter.report(span, origin, message if said else f"{node}: {message}")


def _check_definitions(program: Program, diagnostics: Diagnostics) -> None:
    for definition in [*program.blocks.values(), *program.shortcuts.values()]:
        if isinstance(definition, ast.BlockDef | ast.ShortcutDef):
            for span, message in duplicate_formals(definition):
                diagnostics.error(span, message)


def _stages(emitter: Emitter, stages: ast.Stages, current: str) -> str:
    diagnostics = emitter.diagnostics
    items = stages.items or []
    if not items:
        diagnostics.error(stages.span, "stages has no stage lines (e.g. `layer1: 3 x 64`)")
    if len(items) > MAX_STAGES:
        diagnostics.error(stages.span, f"{len(items):,} stages is over the limit of {MAX_STAGES:,}; give each "
                                         "stage more blocks (`DEPTH x WIDTH`)")
        return current
    _no_repeats(diagnostics, stages.options, "stages option")
    sizes = [_stage_size(emitter, stage) for stage in items]
    total = sum(depth for depth, _ in sizes if depth)
    if total > MAX_BLOCKS:
        diagnostics.error(stages.span, f"{total:,} blocks in all is over the limit of {MAX_BLOCKS:,}; use fewer "
                                         "blocks")
        return current
    names: set[str] = set()
    for stage, name, (depth, width) in zip(items, _stage_names(items), sizes, strict=True):
        root = name.partition(".")[0]
        nested = next((other for other in names if f"{name}.".startswith(f"{other}.")
                       or f"{other}.".startswith(f"{name}.")), None)
        problem = check_path(name, "stage") or (f"stage name '{name}' is used twice" if name in names else None) or (
            f"'{root}' names the network's {root}, which the compiler adds; a stage cannot take it"
            if root in COMPILER_NODES else None) or (
            f"stages '{nested}' and '{name}' would nest, their modules mixed (one name is a prefix path of the "
            "other); rename one" if nested else None)
        if problem:
            diagnostics.error(stage.span, problem)
            continue
        names.add(name)
        emitter.builder.graph.graph["stages"].append(name)
        _no_repeats(diagnostics, stage.options, "stage option")
        options = {o.name: o for o in stages.options} | {o.name: o for o in stage.options}
        current = _stage(emitter, name, stage, depth, width, options, current)
    return current


def _stage_names(items: list[ast.Stage]) -> list[str]:
    return [stage.label or f"layer{number}" for number, stage in enumerate(items, start=1)]


def _stage_size(emitter: Emitter, stage: ast.Stage) -> tuple[int | None, int | None]:
    if stage.width is None:
        value = _value(emitter, stage.depth)
        if isinstance(value, tuple) and len(value) == 2:
            return _positive(emitter, value[0], stage.depth.span, "depth"), value[1]
        if value is not None:
            emitter.diagnostics.error(stage.depth.span, "a stage is `DEPTH x WIDTH`, e.g. `3 x 64`")
        return None, None
    depth = _positive(emitter, _value(emitter, stage.depth), stage.depth.span, "depth")
    width = _positive(emitter, _value(emitter, stage.width), stage.width.span, "width")
    return depth, width


def _stage(emitter: Emitter, name: str, stage: ast.Stage, depth: int | None, width: int | None,
           options: dict[str, ast.Kwarg], current: str) -> str:
    """Instantiate the stage's block and shortcut option, bind the options, and emit `depth` blocks."""
    diagnostics = emitter.diagnostics

    def failed() -> str:  # the stage stands as one placeholder: drawn, and unknown to the checks after it
        return emitter.builder.placeholder(f"{name}.", current, Scope("stage", name), stage.span)

    block_option = options.get("block")
    if block_option is None:
        diagnostics.error(stage.span, "no block type for this stage; add `block: basic` to the stages defaults or "
                                      "the stage line")
        return failed()
    block = _block(emitter, block_option)
    shortcut = _shortcut(emitter, options.get("shortcut"), block)
    if block is not None and shortcut is None and options.get("shortcut") is None and uses_shortcut(block.definition):
        known = ", ".join(sorted(emitter.program.shortcuts))
        diagnostics.error(stage.span, "no shortcut option for this stage; add `shortcut: NAME` to the stages "
                                      f"defaults or the stage line (options: {known})")
    stride = 1
    if "stride" in options:
        stride = _positive(emitter, _value(emitter, options["stride"].value), options["stride"].value.span, "stride")
    if block is None or depth is None or width is None or stride is None or shortcut is False:
        return failed()
    bound = _stage_arguments(emitter, block, shortcut, options)
    if bound is None:
        return failed()
    arguments, shortcut = bound
    formals = {f.name for f in block.definition.formals}
    if stride != 1 and "stride" not in formals:
        diagnostics.error(options["stride"].span, f"block '{block.name}' takes no stride")
    shortcut_name = shortcut.name if shortcut else None
    names = _block_names(emitter, name, options.get("blocks"), depth)
    if names is None:
        return failed()
    for index, block_name in enumerate(names):
        given = [Argument("width", width, stage.span)]
        if "stride" in formals and "stride" in options:
            given.append(Argument("stride", stride if index == 0 else 1, options["stride"].span))
        site = Site(f"{name}.{block_name}.", Scope("stage", name, index, "main", block.name, shortcut_name,
                                                   block_name), stage.span)
        before = _Size.of(emitter)
        current = emitter.block_body(block, tuple(given + arguments), site, current, stage.span, stage=True,
                                     shortcut=shortcut)
        if index == 1:  # the blocks after the first are alike: refuse now what the rest would bring over a limit
            _refuse_oversized(emitter, stage, depth - 2, _Size.of(emitter) - before)
    return current


def _block_names(emitter: Emitter, stage: str, option: ast.Kwarg | None, depth: int) -> list[str] | None:
    """The names of a stage's blocks: `0`, `1`, ... or the stage's `blocks` pattern (`"b{i + 1}"`) for each `i`."""
    if option is None:
        return [str(index) for index in range(depth)]
    pattern = _value(emitter, option.value)
    if pattern is None:
        return None
    if not isinstance(pattern, str) or "{" not in pattern:
        emitter.diagnostics.error(option.value.span, "blocks takes a name pattern with the block's index `i`, as "
                                                     f'in `blocks "b{{i + 1}}"`, not {describe(pattern)}')
        return None
    names: list[str] = []
    for index in range(depth):
        try:
            block = interpolate(pattern, ChainMap({"i": index}, emitter.globals), option.value.span)
        except EvalError as error:
            emitter.diagnostics.error(error.span, error.message)
            return None
        problem = check_path(f"{stage}.{block}", "block") or (
            f"blocks pattern {pattern!r} gives the name '{block}' twice" if block in names else None)
        if problem:
            emitter.diagnostics.error(option.value.span, problem)
            return None
        names.append(block)
    return names


@dataclass(frozen=True)
class _Size:
    """How large the network is so far, in each unit a limit counts."""

    nodes: int
    weighted: int
    instances: int
    instantiated: int

    @staticmethod
    def of(emitter: Emitter) -> _Size:
        return _Size(len(emitter.builder.graph), emitter.builder.weighted, emitter.instances, emitter.instantiated)

    def __sub__(self, other: _Size) -> _Size:
        return _Size(self.nodes - other.nodes, self.weighted - other.weighted, self.instances - other.instances,
                     self.instantiated - other.instantiated)


_LIMITS = (("nodes", MAX_NODES, too_many_layers), ("weighted", MAX_WEIGHTED_LAYERS, too_many_weighted),
           ("instances", MAX_INSTANCES, too_many_instances), ("instantiated", MAX_INSTANTIATED, too_much_instantiated))


def _refuse_oversized(emitter: Emitter, stage: ast.Stage, blocks: int, per_block: _Size) -> None:
    now = _Size.of(emitter)
    for unit, limit, message in _LIMITS:
        total = getattr(now, unit) + blocks * getattr(per_block, unit)
        if total > limit:
            raise TooLarge(message(total), stage.span)


def _block(emitter: Emitter, option: ast.Kwarg) -> Instance | None:
    """The block a `block:` option names (`basic`, or `bottleneck(groups: 32)`)."""
    value, blocks = option.value, emitter.program.blocks
    name = value.id if isinstance(value, ast.Name) else value.func if isinstance(value, ast.Call) else None
    if name not in blocks:
        message = unknown("block", name, blocks) if name else "block expects a block name, e.g. basic or bottleneck"
        emitter.diagnostics.error(value.span, message)
        return None
    callee = _value(emitter, value)
    if not isinstance(callee, Callee):
        return None
    try:
        return block_instance(callee, emitter.program, emitter.globals, value.span)
    except BindError as error:
        for span, message in error.problems:
            emitter.diagnostics.error(span, message)
        return None


def _shortcut(emitter: Emitter, option: ast.Kwarg | None, block: Instance | None) -> Instance | bool | None:
    """The stage's shortcut option, or the one its block alias binds (`plain_basic`); False when it cannot be
    found or the two differ."""
    bound = block.shortcut if block is not None else None
    if option is None:
        return bound
    try:
        given = shortcut_instance(option.value, emitter.program, emitter.globals)
    except BindError as error:
        for span, message in error.problems:
            emitter.diagnostics.error(span, message)
        return False
    if bound is not None and _described(given) != _described(bound):
        emitter.diagnostics.error(option.span, f"shortcut {_described(given)} conflicts with block '{block.name}', "
                                               f"which binds shortcut {_described(bound)}; give one of them")
        return False
    return given


def _described(option: Instance) -> str:
    """A shortcut option as written: `B` or `B(norm: groupnorm(32))`."""
    return literal(Callee("shortcut", option.name, option.arguments))


def _stage_arguments(emitter: Emitter, block: Instance, shortcut: Instance | None,
                     options: dict[str, ast.Kwarg]) -> tuple[list[Argument], Instance | None] | None:
    """The stage options other than block, shortcut and stride, bound to the block's parameter of that name,
    and to the shortcut option's too where it has one (`norm`)."""
    diagnostics = emitter.diagnostics
    block_formals = {f.name for f in block.definition.formals}
    shortcut_formals = {f.name for f in shortcut.definition.formals} if shortcut else set()
    arguments: list[Argument] = []
    shortcut_arguments: list[Argument] = []
    ok = True
    for key, option in options.items():
        if key in _STAGE_KEYS:
            continue
        if key == "width":
            diagnostics.error(option.span, "the stage line gives the width: `DEPTH x WIDTH`")
            ok = False
            continue
        if key not in block_formals | shortcut_formals:
            takes = ", ".join(sorted(block_formals | shortcut_formals))
            message = (f"neither block '{block.name}' nor shortcut option '{shortcut.name}' has a parameter '{key}' "
                       f"(they take {takes})" if shortcut_formals else
                       f"block '{block.name}' has no parameter '{key}' (it takes {takes})")
            chosen = options["block"]
            if option.span.path != chosen.span.path:  # the child replaced the block; the option is inherited
                diagnostics.error(chosen.span, f"{message}; the stage option '{key}' is inherited: drop it with "
                                               f"`-{key}` in `stages (…)`", (Note(option.span, "inherited from here"),))
            else:
                diagnostics.error(option.span, message)
            ok = False
            continue
        if key == "attn" and isinstance(option.value, ast.Name) and option.value.id not in emitter.globals:
            known = ", ".join(sorted(_attentions(emitter.program)))
            diagnostics.error(option.value.span, f"unknown attention '{option.value.id}' (known: {known}, or none)")
            ok = False
            continue
        value = _value(emitter, option.value)
        if value is None:
            ok = False
        elif key in block_formals:
            arguments.append(Argument(key, value, option.span))
        if value is not None and key in shortcut_formals:
            shortcut_arguments.append(Argument(key, value, option.span))
    if "width" not in block_formals:
        diagnostics.error(options["block"].value.span, f"block '{block.name}' has no 'width' parameter to take the "
                                                       "stage's width")
        ok = False
    if not ok:
        return None
    return arguments, shortcut.with_arguments(tuple(shortcut_arguments)) if shortcut else None


def _attentions(program: Program) -> list[str]:
    """The blocks that can be an `attn`: called as layers (no shortcut), taking the branch's `channels` first."""
    found = []
    for name, definition in program.blocks.items():
        if isinstance(definition, ast.BlockDef) and definition.formals and definition.formals[0].name == "channels" \
                and not uses_shortcut(definition):
            found.append(name)
    return found


def _no_repeats(diagnostics: Diagnostics, items: list[ast.Kwarg], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            diagnostics.error(item.span, f"{what} '{item.name}' is given twice")
        seen.add(item.name)


def _value(emitter: Emitter, expr: ast.Expr) -> Value | None:
    try:
        return evaluate(expr, ChainMap({}, emitter.globals))
    except EvalError as error:
        emitter.diagnostics.error(error.span, error.message)
        return None


def _positive(emitter: Emitter, value: Value | None, span: Span, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        emitter.diagnostics.error(span, f"stage {what} must be a positive integer, got {describe(value)}")
        return None
    return value
