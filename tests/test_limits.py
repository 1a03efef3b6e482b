"""The front end's limits (resdsl/limits.py) at their edges: the largest spec of each kind is checked in seconds
with bounded memory, the first one over is refused fast with a message naming the limit, and files that are not
regular files are refused without being read.

Times and memory are those of a fresh process (`os.wait4` gives one child's CPU time and peak RSS), with bounds
loose enough for a busy 2-core machine and tight enough to catch time that grows with the square of the size.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_resdsl
from measured import run_measured
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app
from resdsl.limits import (
    MAX_BLOCKS,
    MAX_CALL_DEPTH,
    MAX_EXPRESSION_DEPTH,
    MAX_EXTENDS_DEPTH,
    MAX_INSTANCES,
    MAX_INSTANTIATED,
    MAX_NODES,
    MAX_PATH_PARTS,
    MAX_SPEC_BYTES,
    MAX_STAGES,
)

# Bounds against a blow-up (a super-linear pass takes minutes at these sizes), not speed targets: the largest
# accepted spec of a kind takes ~6 s of CPU on a quiet 2-core VM and over 20 s when the machine is overloaded.
ACCEPTED_CPU_S = 45.0
REFUSED_CPU_S = 5.0  # the first spec over a limit: well under a second beyond interpreter start-up
WALL_S = 120.0  # a hang guard: the machine may be shared
MAX_RSS = 2 * 2**30

_COMPILE = """
import sys
import resdsl
try:
    print("ok", resdsl.compile(sys.argv[1]).params)
except resdsl.SpecError as error:
    print(error.render())
"""


@dataclass(frozen=True)
class Run:
    cpu: float
    rss: int
    output: str


def _compile_in_child(path: Path) -> Run:
    """Compile `path` in a fresh interpreter; its own CPU time and peak RSS (not pytest's: see tests/measured.py)."""
    try:
        finished = run_measured([sys.executable, "-c", _COMPILE, str(path)], path.parent, timeout=WALL_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {WALL_S} s") from None
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"exit {finished.returncode}:\n{output[-2000:]}"
    return Run(finished.cpu_seconds, finished.max_rss_bytes, output)


def _network(stem: str = "  conv 1x1, 4\n", stages: str = "", before: str = "") -> str:
    return f"{before}network t {{\n  input 3x8x8\n  stem {{\n{stem}  }}\n{stages}}}\n"


def _stages(lines: str, block: str = "basic", shortcut: str = "A") -> str:
    return f"  stages (block: {block}, shortcut: {shortcut}) {{\n{lines}  }}\n"


_TINY_BLOCK = "block tiny(width, stride = 1) {\n  relu\n  add shortcut\n}\n"
# a relu and 1,999 layers that add nothing: a block whose size, not its layers, makes the work of a stage
_EMPTY_BLOCK = "block empty(width, stride = 1) {\n  relu\n" + "  none\n" * 1999 + "  add shortcut\n}\n"
_EMPTY_BLOCK_SIZE = 2006 + 1 + 5  # its syntax nodes, the width it is given, and the identity shortcut's syntax nodes


def _calls(depth: int) -> str:
    """Blocks b0 .. b{depth-1}, each calling the next; the last holds a conv."""
    chain = "".join(f"block b{i}(w) {{\n  x: b{i + 1} w\n}}\n" for i in range(depth - 1))
    return chain + f"block b{depth - 1}(w) {{\n  conv 1x1, w\n}}\n"


LARGEST = {
    "1MB_of_unlabelled_convs": _network("  conv 1x1, 4\n" * 60_000),
    "unlabelled_relus": _network("  conv 1x1, 4\n" + "  relu\n" * 20_000),
    "most_stages": _network(stages=_stages("    1 x 4\n" * MAX_STAGES)),
    "most_blocks": _network(stages=_stages("    1000 x 4\n" * (MAX_BLOCKS // 1000), "tiny", "identity"),
                            before=_TINY_BLOCK),
    "most_instantiated": _network(stages=_stages(f"    {MAX_INSTANTIATED // _EMPTY_BLOCK_SIZE - 1} x 4\n", "empty",
                                                 "identity"), before=_EMPTY_BLOCK),
    "sum_of_2000_terms": "param s = " + " + ".join(["1"] * 2000) + "\n" + _network("  conv 1x1, s\n"),
    "deepest_expression": "param s = " + "-" * MAX_EXPRESSION_DEPTH + "4\n" + _network("  conv 1x1, s\n"),
    "deepest_calls": _calls(MAX_CALL_DEPTH) + _network("  x: b0 4\n"),
}

FIRST_OVER = {
    "one_stage_too_many": (_network(stages=_stages("    1 x 4\n" * (MAX_STAGES + 1))),
                           f"{MAX_STAGES + 1:,} stages is over the limit of {MAX_STAGES:,}"),
    "one_block_too_many": (_network(stages=_stages("    1000 x 4\n" * (MAX_BLOCKS // 1000) + "    1 x 4\n")),
                           f"{MAX_BLOCKS + 1:,} blocks in all is over the limit of {MAX_BLOCKS:,}"),
    "layers_past_the_limit": (_network(stages=_stages(f"    {MAX_NODES // 7 + 5_000} x 4\n")),  # 7 layers a block
                              f"over the limit of {MAX_NODES:,} layers"),
    "instantiated_past_the_limit": (_network(stages=_stages(f"    {MAX_INSTANTIATED // _EMPTY_BLOCK_SIZE + 1} x 4\n",
                                                            "empty", "identity"), before=_EMPTY_BLOCK),
                                    f"over the limit of {MAX_INSTANTIATED:,}"),
    "expression_one_too_deep": ("param s = " + "-" * (MAX_EXPRESSION_DEPTH + 1) + "4\n"
                                + _network("  conv 1x1, s\n"), f"nested more than {MAX_EXPRESSION_DEPTH} deep"),
    "calls_one_too_deep": (_calls(MAX_CALL_DEPTH + 1) + _network("  x: b0 4\n"),
                           f"more than {MAX_CALL_DEPTH} deep"),
    "label_one_part_too_deep": (_network("  conv 1x1, 4\n  " + "a." * MAX_PATH_PARTS + "a: relu\n"),
                                f"path of {MAX_PATH_PARTS + 1} dotted parts is over the limit of {MAX_PATH_PARTS}"),
    "spec_one_byte_too_large": (_network() + "#" * (MAX_SPEC_BYTES - len(_network()) + 1),
                                f"over the limit of {MAX_SPEC_BYTES:,}"),
}


@pytest.mark.parametrize("kind", LARGEST)
def test_largest_accepted_spec_of_each_kind_checks_in_seconds(kind, tmp_path):
    path = tmp_path / f"{kind}.res"
    path.write_text(LARGEST[kind])
    run = _compile_in_child(path)
    assert run.output.startswith("ok"), run.output[-2000:]
    assert run.cpu < ACCEPTED_CPU_S
    assert run.rss < MAX_RSS


@pytest.mark.parametrize("kind", FIRST_OVER)
def test_first_spec_over_each_limit_is_refused_fast(kind, tmp_path):
    text, message = FIRST_OVER[kind]
    path = tmp_path / f"{kind}.res"
    path.write_text(text)
    run = _compile_in_child(path)
    assert f"{path}:" in run.output and message in run.output, run.output[-2000:]
    assert run.cpu < REFUSED_CPU_S
    assert run.rss < MAX_RSS


_THREE_CALLS = "block inner(c) {\n  x = c\n}\nblock three(width) {\n  a: inner 1\n  b: inner 2\n  c: inner 3\n}\n"

STAGE_TOTALS = {
    # the input and the stem's conv, then 7 layers a basic block: conv, bn, relu, conv, bn, add, relu
    "layers": (_network(stages=_stages("    60000 x 4\n")), f"brings the network to {2 + 60_000 * 7:,} layers"),
    # a block is one use of itself and three of `inner`
    "uses": (_network(stages="  stages (block: three) {\n    90000 x 4\n  }\n", before=_THREE_CALLS),
             f"brings the uses of blocks and shortcut options to {90_000 * 4:,}"),
}


@pytest.mark.parametrize("unit", STAGE_TOTALS)
def test_stage_over_a_limit_is_refused_with_the_total_its_blocks_would_bring(unit):
    text, message = STAGE_TOTALS[unit]
    with pytest.raises(resdsl.SpecError, match=message):
        resdsl.compile(text)


def test_label_of_a_hundred_thousand_parts_is_refused_in_linear_time(tmp_path):
    path = tmp_path / "label.res"
    path.write_text(_network("  conv 1x1, 4\n  " + "a." * 100_000 + "a: relu\n"))
    run = _compile_in_child(path)
    assert f"path of 100,001 dotted parts is over the limit of {MAX_PATH_PARTS}" in run.output
    assert run.cpu < ACCEPTED_CPU_S


def test_calls_doubling_at_each_level_are_refused_in_seconds(tmp_path):
    # 2**32 uses of b31 if nothing stopped them, though no block adds a layer
    doubling = "".join(f"block b{i}(w) {{\n  x: b{i + 1} w\n  y: b{i + 1} w\n}}\n" for i in range(31))
    path = tmp_path / "doubling.res"
    path.write_text(doubling + "block b31(w) {\n  none\n}\n" + _network("  conv 1x1, 4\n  x: b0 4\n"))
    run = _compile_in_child(path)
    assert f"the limit of {MAX_INSTANCES:,} for one network" in run.output
    assert run.cpu < ACCEPTED_CPU_S


def test_largest_spec_is_about_the_size_limit():
    assert 0.8 * MAX_SPEC_BYTES < len(LARGEST["1MB_of_unlabelled_convs"]) <= MAX_SPEC_BYTES


# --- extends chains -----------------------------------------------------------------------------------------

def _chain(tmp_path: Path, files: int) -> Path:
    """c1.res extends c2.res ... extends c{files}.res, which holds the network."""
    for i in range(1, files):
        (tmp_path / f"c{i}.res").write_text(f'network n{i} extends "c{i + 1}.res" {{ }}\n')
    (tmp_path / f"c{files}.res").write_text(_network())
    return tmp_path / "c1.res"


def test_extends_chain_at_the_limit_is_accepted(tmp_path):
    assert resdsl.compile(_chain(tmp_path, MAX_EXTENDS_DEPTH)).name == "n1"


def test_extends_chain_too_deep_is_not_called_a_cycle(tmp_path):
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(_chain(tmp_path, 18))
    message = caught.value.diagnostics[0].message
    assert f"more than {MAX_EXTENDS_DEPTH} files deep" in message
    assert "cycle" not in message


# --- files that are not regular files --------------------------------------------------------------------

@contextmanager
def _within(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) if the body takes longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=["fifo", "directory", "device"])
def not_a_file(request, tmp_path) -> tuple[Path, str]:
    """A path that is not a regular file, and what the refusal calls it."""
    if request.param == "fifo":
        path = tmp_path / "pipe.res"
        os.mkfifo(path)
        return path, "it is not a regular file"
    if request.param == "directory":
        path = tmp_path / "folder.res"
        path.mkdir()
        return path, "it is a directory"
    return Path("/dev/zero"), "it is not a regular file"


def test_spec_that_is_not_a_regular_file_is_refused_unread(not_a_file):
    path, kind = not_a_file
    with _within(10), pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(path)
    assert f"{path}:1:1: error: cannot read this spec: {kind}" in caught.value.render()


def test_extends_of_a_file_that_is_not_regular_is_refused_unread(not_a_file, tmp_path):
    target, kind = not_a_file
    child = tmp_path / "child.res"
    child.write_text(f'network t extends "{target}" {{ }}\n')
    with _within(10), pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(child)
    assert f"{child}:1:11: error: cannot read '{target}': {kind}" in caught.value.render()


@pytest.mark.parametrize(("name", "reason"), [("a\0b.res", "the path contains a NUL character"),
                                             ("x" * 5000 + ".res", "File name too long")], ids=["nul", "too_long"])
def test_path_no_file_can_have_is_refused_with_the_reason(name, reason, tmp_path):
    with pytest.raises(resdsl.SpecError, match=reason):
        resdsl.compile(name)


def test_path_too_long_in_extends_is_refused_at_the_extends(tmp_path):
    child = tmp_path / "child.res"
    child.write_text(f'network t extends "{"x" * 5000}.res" {{ }}\n')
    with pytest.raises(resdsl.SpecError, match=f"{child}:1:11: error: cannot read .*: File name too long"):
        resdsl.compile(child)


def test_spec_file_holding_a_nul_is_refused_as_binary_without_quoting_it(tmp_path):
    child = tmp_path / "child.res"
    child.write_text('network t extends "a\0b.res" { }\n')
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(child)
    assert caught.value.render() == f"{child}:1:1: error: cannot read this spec: it is a binary file, not spec text " \
                                    "(it holds NUL bytes)"


# --- command-line values --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["9" * 5000, "-" + "9" * 5000, "3x" + "9" * 5000])
def test_set_with_thousands_of_digits_is_a_usage_error_saying_so(value):
    result = CliRunner().invoke(app, ["check", "cifar20", "--set", f"n={value}"])
    assert result.exit_code == 2
    assert "--set n: the value has more than 18 digits" in result.stderr
    assert "inf" not in result.stderr and "Traceback" not in result.stderr


def test_set_of_an_overflowing_float_is_a_usage_error_saying_so():
    result = CliRunner().invoke(app, ["check", "cifar20", "--set", "n=1e400"])
    assert result.exit_code == 2
    assert "--set n: '1e400' is not a finite number" in result.stderr



def _nested_ifs(depth: int, chained: bool) -> str:
    """A stem of `depth` nested ifs, or of an else-if chain `depth` long whose conditions are all false."""
    body = "if false { relu } else " * depth + "{ relu }" if chained else \
        "if true {\n" * depth + "relu\n" + "}\n" * depth
    return f"network a {{\n  input 3x32x32\n  stem {{\n    relu\n{body}\n  }}\n}}\n"


@pytest.mark.parametrize("command", ["check", "fmt"])
@pytest.mark.parametrize("chained", [False, True], ids=["nested", "else_if_chain"])
def test_ifs_nested_thousands_deep_are_a_located_error_not_an_internal_one(command: str, chained: bool,
                                                                           tmp_path: Path) -> None:
    (tmp_path / "deep.res").write_text(_nested_ifs(2000, chained))
    result = run_resdsl(command, "deep.res", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("deep.res:") and "internal error" not in result.stderr


@pytest.mark.parametrize(("chained", "message"), [
    (False, "`if` and `for` are nested more than 16 deep here, the limit; split the body into blocks"),
    (True, "this else-if chain has more than 16 cases after here, the limit (each `else if` nests one level); "
           "continue it in a block called from an `else`"),
], ids=["nested", "else_if_chain"])
def test_the_nesting_limit_names_an_else_if_chain_as_a_chain(chained: bool, message: str) -> None:
    with pytest.raises(resdsl.SpecError) as error:
        resdsl.compile(_nested_ifs(17, chained))
    assert str(error.value).splitlines()[0].endswith(f"error: {message}")


def test_ifs_nested_a_few_deep_still_check() -> None:
    assert resdsl.compile(_nested_ifs(8, chained=False)).params == 0
    assert resdsl.compile(_nested_ifs(8, chained=True)).params == 0


def test_blocks_calling_blocks_at_the_limit_each_nesting_ifs_at_the_limit_check() -> None:
    """The two limits together are what the recursive passes must take: 31 blocks deep, 16 ifs deep in each."""
    blocks = [f"block b{k}(width) {{\n" + "if true {\n" * 16 + (f"b{k + 1} width" if k < 30 else "relu") + "\n"
              + "}\n" * 16 + "}" for k in range(31)]
    network = "network a {\n  input 3x32x32\n  stem { conv 3x3, 4 }\n  stages { s: 1 x 4, block: b0 }\n}"
    assert resdsl.compile("\n".join([*blocks, network]) + "\n").params == 108  # conv 3x3x3x4, no bias
