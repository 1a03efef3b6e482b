"""docs/language.md against the code: its ops, limits and functions tables, and its spec examples.

Examples are fenced ```res blocks. One whose first line is `# complete` must compile; one whose first
line is `# error: LINE:COL: fragment` must fail with that error there (lines counted in the block).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import resdsl
from resdsl import limits
from resdsl.diagnostics import SpecError
from resdsl.expr import BUILTINS
from resdsl.ir.ops import OPS, reference_table

LANGUAGE = Path(__file__).resolve().parent.parent / "docs" / "language.md"
_FENCE = re.compile(r"^```res\n(.*?)^```", re.MULTILINE | re.DOTALL)
_ERROR = re.compile(r"# error: (\d+):(\d+): (.+)")


def _text() -> str:
    return LANGUAGE.read_text()


def _section(title: str) -> str:
    """The text of the `## title` section, up to the next `## `."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", _text(), re.MULTILINE | re.DOTALL)
    assert match, f"docs/language.md has no section '## {title}'"
    return match[1]


def _rows(section: str) -> list[list[str]]:
    """The body rows of the tables in a section, as lists of cells."""
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:] if rows else rows


def _first_code(cell: str) -> str | None:
    match = re.match(r"`([^`]+)`", cell)
    return match[1] if match else None


def _examples(marker: str) -> list[str]:
    return [block for block in _FENCE.findall(_text()) if block.startswith(marker)]


# --- the ops table ---------------------------------------------------------------------------------

_GENERATED = re.compile(r"^<!-- ops table: .*? -->\n(.*?)^<!-- end of ops table -->$", re.MULTILINE | re.DOTALL)


def test_the_ops_table_is_the_one_the_op_classes_make():
    """Edit an op's `doc` and paste `python -c "from resdsl.ir.ops import reference_table as t; print(t())"`."""
    tables = _GENERATED.findall(_section("Ops"))
    assert len(tables) == 1, "docs/language.md's Ops section has no table between its `ops table` markers"
    assert tables[0] == reference_table()


def _ops_table() -> dict[str, list[str]]:
    return {_first_code(row[0]): row for row in _rows(_section("Ops")) if _first_code(row[0])}


def test_every_op_a_spec_can_write_has_a_row():
    writable = {name for name, op in OPS.items() if not op.internal}
    assert sorted(writable - set(_ops_table())) == []


def test_every_row_of_the_ops_table_is_an_op_a_spec_can_write():
    writable = {name for name, op in OPS.items() if not op.internal}
    assert sorted(set(_ops_table()) - writable) == []


def test_each_row_names_every_argument_of_its_op():
    table = _ops_table()
    missing = {name: [p.name for p in OPS[name].signature if not re.search(rf"\b{p.name}\b", table[name][1])]
               for name in table if name in OPS}
    assert {name: params for name, params in missing.items() if params} == {}


def test_each_row_gives_a_shape_rule_and_a_purpose():
    assert [name for name, row in _ops_table().items() if len(row) != 4 or not row[2] or not row[3]] == []


# --- the limits and functions tables -------------------------------------------------------------------

def test_the_limits_table_has_one_row_per_constant_with_its_value():
    constants = {name: value for name, value in vars(limits).items() if name.isupper()}
    documented = {_first_code(row[1]): int(row[2].replace(",", "")) for row in _rows(_section("Limits"))}
    assert documented == constants


def test_the_functions_table_lists_every_builtin():
    rows = _rows(_section("Expressions and built-in functions"))
    assert sorted(_first_code(row[0]) for row in rows) == sorted(BUILTINS)


# --- the examples -----------------------------------------------------------------------------------------

def test_the_reference_has_examples_of_both_kinds():
    assert len(_examples("# complete")) >= 6 and len(_examples("# error:")) >= 5


@pytest.mark.parametrize("example", _examples("# complete"), ids=lambda e: e.splitlines()[1][:40])
def test_a_complete_example_compiles(example):
    network = resdsl.compile(example)
    assert network.params > 0


@pytest.mark.parametrize("example", _examples("# error:"), ids=lambda e: e.splitlines()[0][9:60])
def test_an_error_example_fails_where_it_says(example):
    line, column, fragment = _ERROR.fullmatch(example.splitlines()[0]).groups()
    with pytest.raises(SpecError) as caught:
        resdsl.compile(example)
    found = [(d.span.line, d.span.column, d.message) for d in caught.value.diagnostics]
    assert any((at, col) == (int(line), int(column)) and fragment in message for at, col, message in found), found
