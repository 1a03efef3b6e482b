"""Random edits of valid zoo specs: the front end either compiles them or raises SpecError, never anything else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app

SPECS = Path(__file__).resolve().parent.parent / "specs"
# Small nets keep each example fast; extends chains stay resolvable because parents sit beside them.
SEEDS = [SPECS / name for name in ("cifar_resnet.res", "resnet34.res", "torchvision/resnet50.res",
                                   "preact/preact_cifar.res", "vgg19.res", "cifar110.res")]
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:x\d+)*|\S")
_PIECES = ["{", "}", "(", ")", ",", ":", ";", "\n", "x", "-", "0", "1", "3x3", "65537", "stride 2",
           "block", "stages", "shortcut", "network", "param", "extends", "add shortcut", "linear 10",
           "avgpool", "//", "/ 0", "if", "else", "\"", "#", "1e999", "99999999999999999999", "groups 7"]



def _edits(pieces: list[str], longest_deletion: int, largest_number: int) -> st.SearchStrategy:
    """One edit of a spec's text: (kind, where as a fraction of the text, what)."""
    return st.one_of(
        st.tuples(st.just("delete_char"), st.floats(0, 1), st.integers(1, longest_deletion)),
        st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(pieces)),
        st.tuples(st.just("insert_char"), st.floats(0, 1), st.characters(codec="utf-8")),
        st.tuples(st.just("replace_token"), st.floats(0, 1), st.sampled_from(pieces)),
        st.tuples(st.just("swap_number"), st.floats(0, 1), st.integers(-3, largest_number)),
        st.tuples(st.just("drop_line"), st.floats(0, 1), st.just(None)),
    )


edit = _edits(_PIECES, 4, 200)


def _apply(text: str, change: tuple) -> str:
    kind, where, what = change
    if kind == "delete_char":
        at = int(where * len(text))
        return text[:at] + text[at + what:]
    if kind in ("insert", "insert_char"):
        at = int(where * len(text))
        return text[:at] + what + text[at:]
    if kind == "drop_line":
        lines = text.splitlines(keepends=True)
        if lines:
            del lines[int(where * (len(lines) - 1))]
        return "".join(lines)
    pattern = r"\d+" if kind == "swap_number" else _TOKEN
    matches = list(re.finditer(pattern, text))
    if not matches:
        return text
    match = matches[int(where * (len(matches) - 1))]
    return text[:match.start()] + str(what) + text[match.end():]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A copy of the zoo, so that mutants sit beside their parents (`extends "cifar_resnet.res"`)."""
    root = tmp_path_factory.mktemp("zoo")
    for spec in SPECS.rglob("*.res"):
        target = root / spec.relative_to(SPECS)
        target.parent.mkdir(exist_ok=True)
        target.write_text(spec.read_text())
    return root


def _mutant(seed: Path, changes: list[tuple], zoo: Path) -> Path:
    text = seed.read_text()
    for change in changes:
        text = _apply(text, change)
    path = zoo / seed.relative_to(SPECS).parent / "mutant.res"
    path.write_text(text)
    return path


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(SEEDS), changes=st.lists(edit, min_size=1, max_size=4))
def test_edited_specs_compile_or_raise_spec_error(seed, changes, zoo):
    _compile_or_spec_error(_mutant(seed, changes, zoo))


def _compile_or_spec_error(path: Path) -> None:
    """Compile `path`: a SpecError, which renders, is the only failure allowed."""
    try:
        resdsl.compile(path)
    except resdsl.SpecError as error:
        assert error.render()


@settings(max_examples=25, deadline=None)
@given(seed=st.sampled_from(SEEDS), changes=st.lists(edit, min_size=1, max_size=3))
def test_cli_never_prints_a_traceback_for_edited_specs(seed, changes, zoo):
    path = _mutant(seed, changes, zoo)
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code in (0, 1)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert re.search(r":\d+:\d+: error: |^error: ", result.stderr, re.MULTILINE)


# Language v2: dataflow, op values, shortcut cases, overrides and dotted labels, edited in the specs that use them.
V2_SEEDS = sorted(p for p in [*SPECS.glob("timm/*.res"), *SPECS.glob("preact/*.res")] if p.stem != "preact1001")
_V2_PIECES = [
    "add x", "add input", "mul input", "from input", "from pre", "concat input, input", "add shortcut(pre)",
    "add shortcut(3)", "shortcut(", "override ", "override block ", "norm: groupnorm(32)", "norm: groupnorm(eps: -1)",
    "norm: none", "attn: se", "attn: eca(gamma: 0)", "act: silu", "block: bottleneck(groups: 32)",
    "shortcut: B(norm: none)", "shortcut: 3", "slice_channels 0, 8", "softmax branches 2", "channel_conv 3", "sigmoid",
    "pre: ", "x: ", "0.1: ", "forward: ", "output: ", "same { identity }", "changed { identity }", "\r", "\r\n",
    "in_channels", "make_divisible(", "min(", "max()", "log2(0)", "floor(", " = ", "stem.conv: ", "head.fc: ",
    "dilation 1000", "padding 500", "kernel 999", "99999999999999999999", "1e999", "{", "}", "(", ")", ",", ":", "\n",
]

v2_edit = _edits(_V2_PIECES, 8, 70000)


@settings(max_examples=150, deadline=None)
@given(seed=st.sampled_from(V2_SEEDS), changes=st.lists(v2_edit, min_size=1, max_size=4))
def test_edited_v2_specs_compile_or_raise_spec_error(seed, changes, zoo):
    _compile_or_spec_error(_mutant(seed, changes, zoo))
