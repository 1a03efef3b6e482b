"""The run folder's spec.res: one self-contained file, the network as resolved and the recipe as run.

Params are bound to their values, the `extends` chain is merged into one network, the user's own
blocks and shortcuts are copied, and the train section is written from the recipe (spec and flags
together), so `resdsl check spec.res` and `resdsl train spec.res` need nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from functools import cache

from resdsl.expr import literal
from resdsl.network import Network
from resdsl.parser import parse
from resdsl.recipe import SETTINGS, Recipe
from resdsl.resolve import prelude_source
from resdsl.source import SourceMap, Span

INDENT = "  "


def standalone_spec(network: Network, recipe: Recipe, steps_per_epoch: int, origin: str) -> str:
    """The text of spec.res for `network` (with the input shape it was trained for) trained on `recipe`.

    `origin` names the spec it came from.
    """
    program = network.program
    sources = program.sources
    prelude = prelude_source().path
    own = [item for item in (*program.blocks.values(), *program.shortcuts.values()) if item.span.path != prelude]
    values = program.param_values
    bound = ", ".join(f"{name} = {literal(value)}" for name, value in values.items())
    header = (f"# {program.network.name} as trained: {origin} resolved into one file"
              + (f", params bound ({bound})" if bound else "") + ",\n# the input and train section as run.\n")
    parts = [header]
    parts += [f"param {name} = {literal(value)}\n" for name, value in values.items()]
    parts += [f"\n{_definition(sources, item)}\n" for item in own]
    parts.append(f"\nnetwork {program.network.name} {{\n")
    parts += [f"{INDENT}{section}\n" for section in _sections(program.network, sources)]
    parts.append(f"{INDENT}train {{\n")
    parts += [f"{INDENT * 2}{line}\n" for line in train_lines(recipe, steps_per_epoch)]
    parts.append(f"{INDENT}}}\n}}\n")
    return "".join(parts)


def train_lines(recipe: Recipe, steps_per_epoch: int) -> list[str]:
    """The train-section lines that `recipe_of` reads back as `recipe`.

    Milestones count in the unit of the run length beside them; where the recipe's schedule
    counts in the other unit, both are written in iterations (the same steps, exactly).
    """
    schedule = recipe.schedule
    in_epochs = recipe.epochs is not None
    if schedule.kind == "steps" and schedule.milestones and (schedule.unit == "epochs") != in_epochs:
        scale = steps_per_epoch if schedule.unit == "epochs" else 1
        milestones = tuple((at * scale, factor) for at, factor in schedule.milestones)
        recipe = recipe.updated(iterations=recipe.total_iterations(steps_per_epoch), epochs=None,
                                schedule=replace(schedule, milestones=milestones, unit="iterations"))
    return [f"{key} {text}".rstrip() for key, write in WRITERS.items()
            if (text := write(getattr(recipe, key))) is not None]


def setting_text(recipe: Recipe, key: str) -> str:
    """How the train section writes `recipe`'s setting `key` (e.g. `steps(32000: 0.1)` for the schedule)."""
    return WRITERS[key](getattr(recipe, key)) or "unset"


def _definition(sources: SourceMap, item) -> str:
    """A block or shortcut definition, written `override` exactly where it replaces a built-in of its name."""
    text = _OVERRIDE.sub("", _text(sources, item.span), count=1)
    return f"override {text}" if item.name in _builtins() else text


@cache
def _builtins() -> frozenset[str]:
    """The names of the prelude's blocks and shortcuts."""
    prelude = parse(prelude_source(), SourceMap())
    return frozenset(item.name for item in (*prelude.blocks, *prelude.shortcuts))


_OVERRIDE = re.compile(r"^override\s+")


def _sections(network, sources: SourceMap) -> list[str]:
    sections = []
    if network.input is not None:
        sections.append(f"input {literal(tuple(network.input.dims))}")
    if network.stem is not None:
        sections.append(_text(sources, network.stem.span))
    if network.stages is not None:
        stages = network.stages
        options = ", ".join(_text(sources, option.span) for option in stages.options)
        line = f"stages ({options})" if options else "stages"
        if stages.items is not None:
            items = "".join(f"{INDENT * 2}{_text(sources, item.span)}\n" for item in stages.items)
            line += f" {{\n{items}{INDENT}}}"
        sections.append(line)
    if network.head is not None:
        sections.append(_text(sources, network.head.span))
    return sections


def _text(sources: SourceMap, span: Span) -> str:
    """The source text `span` covers."""
    source = sources.get(span.path)
    assert source is not None, "a span's file is in the source map it was parsed into"
    lines = source.text.splitlines(keepends=True)
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1:span.end_column - 1]
    return (lines[span.line - 1][span.column - 1:] + "".join(lines[span.line:span.end_line - 1])
            + lines[span.end_line - 1][:span.end_column - 1])


#: How each Recipe field is written as a train-section line (None: the line is left out).
WRITERS: dict[str, Callable[[object], str | None]] = {key: setting.write for key, setting in SETTINGS.items()}
