"""Lowering a resolved program to the graph IR (after resolve, before the passes): the network's lines.

This module checks the input line and the stage lines and options, and has resdsl.ir.emit's `Emitter`
add the nodes. Three steps per stage: instantiate (the block and shortcut option named by the stage's
options, through aliases, by resdsl.ir.instantiate), bind (width, stride and the other options to their
parameters), emit (the block bodies). Shapes are inferred as nodes are added, because a shortcut
option picks its `same` or `changed` case from the shapes the residual branch produces.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Literal

from resdsl import ast
from resdsl.diagnostics import Diagnostics, Note
from resdsl.expr import Argument, Callee, EvalError, Value, describe, evaluate, interpolate, literal
from resdsl.ir.emit import Emitter, Size, too_many_instances, too_much_instantiated, uses_shortcut
from resdsl.ir.graph import COMPILER_NODES, IRGraph, Scope, Site, TooLarge, too_many_layers, too_many_weighted
from resdsl.ir.instantiate import (
    BindError,
    BlockInstance,
    ShortcutInstance,
    block_instance,
    duplicate_formals,
    shortcut_instance,
    unknown,
)
from resdsl.ir.names import check_path
from resdsl.ir.ops import fmt
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
_LIMITS = (("nodes", MAX_NODES, too_many_layers), ("weighted", MAX_WEIGHTED_LAYERS, too_many_weighted),
           ("instances", MAX_INSTANCES, too_many_instances), ("instantiated", MAX_INSTANTIATED, too_much_instantiated))


def lower_program(program: Program, diagnostics: Diagnostics) -> IRGraph:
    """The IR of the program's network; errors go to `diagnostics`."""
    return _Lowering(program, diagnostics).network()


class _Lowering:
    """One program's lowering: checks the network's lines and stage options, and has the emitter add the nodes."""

    def __init__(self, program: Program, diagnostics: Diagnostics) -> None:
        self.program = program
        self.diagnostics = diagnostics
        self.emitter = Emitter(program, diagnostics)

    def network(self) -> IRGraph:
        network, diagnostics, emitter = self.program.network, self.diagnostics, self.emitter
        _check_definitions(self.program, diagnostics)
        if network.input is None:
            diagnostics.error(network.span, f"network '{network.name}' has no `input CxHxW` line")
            return emitter.graph
        dims = network.input.dims
        if len(dims) != 3 or min(dims) <= 0:
            diagnostics.error(network.input.span, f"input must be CxHxW with positive sizes, got {fmt(dims)}")
            return emitter.graph
        if max(dims) > MAX_WIDTH:
            diagnostics.error(network.input.span, f"input size {max(dims):,} is over the limit of {MAX_WIDTH:,} "
                                                  "for channels or a side; use a smaller input")
            return emitter.graph
        stages = (network.stages.items or []) if network.stages else []
        current = emitter.start(dims, network.input.span, _stage_names(stages))
        try:
            if network.stem:
                current = emitter.body(network.stem.layers, Scope("stem", "stem"), current)
            if network.stages:
                current = self.stages(network.stages, current)
            if network.head:
                current = emitter.body(network.head.layers, Scope("head", "head"), current)
        except TooLarge as error:
            diagnostics.error(error.span, str(error))
            return emitter.graph
        emitter.finish(current, network.span)
        return emitter.graph

    def stages(self, stages: ast.Stages, current: str) -> str:
        diagnostics = self.diagnostics
        items = stages.items or []
        if not items:
            diagnostics.error(stages.span, "stages has no stage lines (e.g. `layer1: 3 x 64`)")
        if len(items) > MAX_STAGES:
            diagnostics.error(stages.span, f"{len(items):,} stages is over the limit of {MAX_STAGES:,}; give each "
                                           "stage more blocks (`DEPTH x WIDTH`)")
            return current
        _no_repeats(diagnostics, stages.options, "stages option")
        sizes = [self.stage_size(stage) for stage in items]
        total = sum(depth for depth, _ in sizes if depth)
        if total > MAX_BLOCKS:
            diagnostics.error(stages.span, f"{total:,} blocks in all is over the limit of {MAX_BLOCKS:,}; use "
                                           "fewer blocks")
            return current
        names: set[str] = set()
        for stage, name, (depth, width) in zip(items, _stage_names(items), sizes, strict=True):
            root = name.partition(".")[0]
            nested = next((other for other in names if f"{name}.".startswith(f"{other}.")
                           or f"{other}.".startswith(f"{name}.")), None)
            problem = check_path(name, "stage") or (
                f"stage name '{name}' is used twice" if name in names else None) or (
                f"'{root}' names the network's {root}, which the compiler adds; a stage cannot take it"
                if root in COMPILER_NODES else None) or (
                f"stages '{nested}' and '{name}' would nest, their modules mixed (one name is a prefix path of the "
                "other); rename one" if nested else None)
            if problem:
                diagnostics.error(stage.span, problem)
                continue
            names.add(name)
            self.emitter.graph.stages.append(name)
            _no_repeats(diagnostics, stage.options, "stage option")
            options = {o.name: o for o in stages.options} | {o.name: o for o in stage.options}
            current = self.stage(name, stage, depth, width, options, current)
        return current

    def stage_size(self, stage: ast.Stage) -> tuple[int | None, int | None]:
        if stage.width is None:
            value = self.value(stage.depth)
            if isinstance(value, tuple) and len(value) == 2:
                return self.positive(value[0], stage.depth.span, "depth"), value[1]
            if value is not None:
                self.diagnostics.error(stage.depth.span, "a stage is `DEPTH x WIDTH`, e.g. `3 x 64`")
            return None, None
        depth = self.positive(self.value(stage.depth), stage.depth.span, "depth")
        width = self.positive(self.value(stage.width), stage.width.span, "width")
        return depth, width

    def stage(self, name: str, stage: ast.Stage, depth: int | None, width: int | None,
              options: dict[str, ast.Kwarg], current: str) -> str:
        """Instantiate the stage's block and shortcut option, bind the options, and emit `depth` blocks."""
        diagnostics, emitter = self.diagnostics, self.emitter

        def failed() -> str:  # the stage stands as one placeholder: drawn, and unknown to the checks after it
            return emitter.placeholder(Site(f"{name}.", Scope("stage", name)), current, stage.span)

        block_option = options.get("block")
        if block_option is None:
            diagnostics.error(stage.span, "no block type for this stage; add `block: basic` to the stages defaults "
                                          "or the stage line")
            return failed()
        block = self.block(block_option)
        shortcut = self.shortcut(options.get("shortcut"), block)
        if block is not None and shortcut is None and options.get("shortcut") is None \
                and uses_shortcut(block.definition):
            known = ", ".join(sorted(self.program.shortcuts))
            diagnostics.error(stage.span, "no shortcut option for this stage; add `shortcut: NAME` to the stages "
                                          f"defaults or the stage line (options: {known})")
        stride = 1
        if "stride" in options:
            stride = self.positive(self.value(options["stride"].value), options["stride"].value.span, "stride")
        if block is None or depth is None or width is None or stride is None or shortcut is False:
            return failed()
        bound = self.stage_arguments(block, shortcut, options)
        if bound is None:
            return failed()
        arguments, shortcut = bound
        formals = {f.name for f in block.definition.formals}
        if stride != 1 and "stride" not in formals:
            diagnostics.error(options["stride"].span, f"block '{block.name}' takes no stride")
        shortcut_name = shortcut.name if shortcut else None
        names = self.block_names(name, options.get("blocks"), depth)
        if names is None:
            return failed()
        for index, block_name in enumerate(names):
            given = [Argument("width", width, stage.span)]
            if "stride" in formals and "stride" in options:
                given.append(Argument("stride", stride if index == 0 else 1, options["stride"].span))
            site = Site(f"{name}.{block_name}.", Scope("stage", name, index, "main", block.name, shortcut_name,
                                                       block_name), stage.span)
            before = emitter.size()
            current = emitter.stage_block(block, tuple(given + arguments), site, current, stage.span, shortcut)
            if index == 1:  # the blocks after the first are alike: refuse now what the rest would bring over a limit
                _refuse_oversized(stage, depth - 2, before, emitter.size())
        return current

    def block_names(self, stage: str, option: ast.Kwarg | None, depth: int) -> list[str] | None:
        """The names of a stage's blocks: `0`, `1`, ... or its `blocks` pattern (`"b{i + 1}"`) for each `i`."""
        if option is None:
            return [str(index) for index in range(depth)]
        pattern = self.value(option.value)
        if pattern is None:
            return None
        if not isinstance(pattern, str) or "{" not in pattern:
            self.diagnostics.error(option.value.span, "blocks takes a name pattern with the block's index `i`, as "
                                                      f'in `blocks "b{{i + 1}}"`, not {describe(pattern)}')
            return None
        names: list[str] = []
        for index in range(depth):
            try:
                block = interpolate(pattern, ChainMap({"i": index}, self.emitter.names), option.value.span)
            except EvalError as error:
                self.diagnostics.error(error.span, error.message)
                return None
            problem = check_path(f"{stage}.{block}", "block") or (
                f"blocks pattern {pattern!r} gives the name '{block}' twice" if block in names else None)
            if problem:
                self.diagnostics.error(option.value.span, problem)
                return None
            names.append(block)
        return names

    def block(self, option: ast.Kwarg) -> BlockInstance | None:
        """The block a `block:` option names (`basic`, or `bottleneck(groups: 32)`)."""
        value, blocks = option.value, self.program.blocks
        name = value.id if isinstance(value, ast.Name) else value.func if isinstance(value, ast.Call) else None
        if name not in blocks:
            message = (unknown("block", name, blocks) if name
                       else "block expects a block name, e.g. basic or bottleneck")
            self.diagnostics.error(value.span, message)
            return None
        callee = self.value(value)
        if not isinstance(callee, Callee):
            return None
        try:
            return block_instance(callee, self.program, self.emitter.names, value.span)
        except BindError as error:
            self.report(error)
            return None

    def shortcut(self, option: ast.Kwarg | None,
                 block: BlockInstance | None) -> ShortcutInstance | Literal[False] | None:
        """The stage's shortcut option, or the one its block alias binds (`plain_basic`); False when it cannot be
        found or the two differ."""
        bound = block.shortcut if block is not None else None
        if option is None:
            return bound
        try:
            given = shortcut_instance(option.value, self.program, self.emitter.names)
        except BindError as error:
            self.report(error)
            return False
        if bound is not None and block is not None and _described(given) != _described(bound):
            self.diagnostics.error(option.span, f"shortcut {_described(given)} conflicts with block '{block.name}', "
                                                f"which binds shortcut {_described(bound)}; give one of them")
            return False
        return given

    def stage_arguments(self, block: BlockInstance, shortcut: ShortcutInstance | None,
                        options: dict[str, ast.Kwarg]) -> tuple[list[Argument], ShortcutInstance | None] | None:
        """The stage options other than block, shortcut and stride, bound to the block's parameter of that name,
        and to the shortcut option's too where it has one (`norm`)."""
        diagnostics = self.diagnostics
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
                message = (f"neither block '{block.name}' nor shortcut option '{shortcut.name}' has a parameter "
                           f"'{key}' (they take {takes})" if shortcut is not None and shortcut_formals else
                           f"block '{block.name}' has no parameter '{key}' (it takes {takes})")
                chosen = options["block"]
                if option.span.path != chosen.span.path:  # the child replaced the block; the option is inherited
                    diagnostics.error(chosen.span, f"{message}; the stage option '{key}' is inherited: drop it with "
                                                   f"`-{key}` in `stages (…)`",
                                      (Note(option.span, "inherited from here"),))
                else:
                    diagnostics.error(option.span, message)
                ok = False
                continue
            if key == "attn" and isinstance(option.value, ast.Name) and option.value.id not in self.emitter.names:
                known = ", ".join(sorted(_attentions(self.program)))
                diagnostics.error(option.value.span, f"unknown attention '{option.value.id}' (known: {known}, or "
                                                     "none)")
                ok = False
                continue
            value = self.value(option.value)
            if value is None:
                ok = False
            elif key in block_formals:
                arguments.append(Argument(key, value, option.span))
            if value is not None and key in shortcut_formals:
                shortcut_arguments.append(Argument(key, value, option.span))
        if "width" not in block_formals:
            diagnostics.error(options["block"].value.span, f"block '{block.name}' has no 'width' parameter to take "
                                                           "the stage's width")
            ok = False
        if not ok:
            return None
        return arguments, shortcut.with_arguments(tuple(shortcut_arguments)) if shortcut else None

    def value(self, expr: ast.Expr) -> Value | None:
        """The value of a stage line's expression, reported if it has none."""
        try:
            return evaluate(expr, self.emitter.names)
        except EvalError as error:
            self.diagnostics.error(error.span, error.message)
            return None

    def positive(self, value: Value | None, span: Span, what: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.diagnostics.error(span, f"stage {what} must be a positive integer, got {describe(value)}")
            return None
        return value

    def report(self, error: BindError) -> None:
        for span, message in error.problems:
            self.diagnostics.error(span, message)


def _check_definitions(program: Program, diagnostics: Diagnostics) -> None:
    for definition in [*program.blocks.values(), *program.shortcuts.values()]:
        if isinstance(definition, ast.BlockDef | ast.ShortcutDef):
            for span, message in duplicate_formals(definition):
                diagnostics.error(span, message)


def _stage_names(items: list[ast.Stage]) -> list[str]:
    return [stage.label or f"layer{number}" for number, stage in enumerate(items, start=1)]


def _refuse_oversized(stage: ast.Stage, blocks: int, before: Size, after: Size) -> None:
    """Refuse what `blocks` more blocks, each as large as the one from `before` to `after`, bring over a limit."""
    for unit, limit, message in _LIMITS:
        now = getattr(after, unit)
        total = now + blocks * (now - getattr(before, unit))
        if total > limit:
            raise TooLarge(message(total), stage.span)


def _described(option: ShortcutInstance) -> str:
    """A shortcut option as written: `B` or `B(norm: groupnorm(32))`."""
    return literal(Callee("shortcut", option.name, option.arguments))


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
