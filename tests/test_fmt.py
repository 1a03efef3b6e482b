"""`resdsl fmt`: one canonical layout, idempotent, comments kept, the network unchanged."""

from __future__ import annotations

import os
import random
import re
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_resdsl

import resdsl
from resdsl.format import format_text

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [*sorted((ROOT / "specs").rglob("*.res")), ROOT / "grammars" / "prelude.res"]
SPECS = [path for path in SHIPPED if path.parent.name != "grammars" and "network" in path.read_text()]


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def _mangled(text: str, seed: int) -> str:
    """`text` with random layout that the canonical one undoes exactly: spaces, indentation, blank lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    for line in text.split("\n"):
        if line.strip().startswith("}"):
            lines.extend([" " * rng.randint(0, 4)] * rng.randint(0, 2))  # blank lines the layout removes
        code, hash_, comment = line.partition("#")
        code = re.sub(r"\s*,\s*", lambda _: " " * rng.randint(0, 2) + "," + " " * rng.randint(0, 3), code)
        code = re.sub(r"(?<![=!<>])\s*=\s*(?!=)", lambda _: " " * rng.randint(0, 3) + "=" + " " * rng.randint(0, 3),
                      code)  # `=` alone, not in `==`
        code = '"'.join(re.sub(r"\s*\{\s*", lambda _: " " * rng.randint(1, 3) + "{" + " " * rng.randint(1, 3), part)
                        if index % 2 == 0 else part for index, part in enumerate(code.split('"')))  # not in strings
        code = re.sub(r"\s*:\s+", lambda _: " " * rng.randint(0, 2) + ":" + " " * rng.randint(1, 3), code)
        code = " " * rng.randint(0, 9) + code.strip() + " " * rng.randint(0, 2) if code.strip() else code
        lines.append(code + hash_ + comment if hash_ else code.rstrip() if not code.strip() else code)
        if not line.strip() or line.rstrip().endswith("{"):
            lines.extend([" " * rng.randint(0, 4)] * rng.randint(0, 2))  # blank lines the layout removes or merges
    return "\n".join(lines)


@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_shipped_files_are_in_the_canonical_layout(path: Path) -> None:
    assert format_text(path.read_text(), str(path)) == path.read_text()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_mangled_layout_comes_back_to_the_canonical_one(path: Path, seed: int) -> None:
    mangled = _mangled(path.read_text(), seed)
    assert mangled != path.read_text()
    formatted = format_text(mangled, str(path))
    assert formatted == path.read_text()
    assert format_text(formatted, str(path)) == formatted


def _ir(network: resdsl.Network) -> list[tuple]:
    """Every node's name, op, arguments, shape, scope, counts and inputs: the IR less its source positions."""
    graph = network.graph
    return [(name, str(node.op), node.args, node.shape, node.scope, node.meta.params, node.meta.macs,
             list(graph.pred[name])) for name, node in graph.nodes.items()]


def test_mangled_then_formatted_specs_compile_to_the_same_networks(tmp_path: Path) -> None:
    copy = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", copy)
    for path in SPECS:
        mangled = copy / path.relative_to(ROOT / "specs")
        mangled.write_text(format_text(_mangled(path.read_text(), seed=7), str(path)))
    for path in SPECS:
        before = resdsl.compile(path)
        after = resdsl.compile(copy / path.relative_to(ROOT / "specs"))
        assert (after.params, after.macs, _ir(after)) == (before.params, before.macs, _ir(before)), path


MESSY = """\
# a comment of its own
param   n=3   # trailing
block foo ( a,b = -1 ) { conv 3x3 , a ; relu;
   x = a*2+ - 1


    layer1 . 0 : conv 3x3,x, stride (1 if a==2 else 2) }
network n {
 input 3x32x32
 stages(block : basic) { layer1: 3 x 16 ,stride 1
      # inside
 2x32;   2x64 }
 head {}
}
"""

CANONICAL = """\
# a comment of its own
param n = 3  # trailing
block foo(a, b = -1) {
  conv 3x3, a; relu
  x = a * 2 + -1

  layer1.0: conv 3x3, x, stride (1 if a == 2 else 2)
}
network n {
  input 3x32x32
  stages(block: basic) {
    layer1: 3 x 16, stride 1
    # inside
    2x32; 2x64
  }
  head { }
}
"""


def test_layout_rules_by_example() -> None:
    assert format_text(MESSY) == CANONICAL


def test_parameter_list_over_lines_continues_under_its_first_parameter() -> None:
    text = "block b(width,\n   stride = 1) {\n relu\n}\n"
    assert format_text(text) == "block b(width,\n        stride = 1) {\n  relu\n}\n"


def _cli(*args: str, cwd: Path, stdin: str | bytes | None = None, memory: int | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`resdsl fmt ARGS` (see conftest.run_resdsl)."""
    return run_resdsl("fmt", *args, cwd=cwd, stdin=stdin, memory=memory, timeout=timeout)


def test_check_lists_the_files_that_would_change_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "good.res").write_text(CANONICAL)
    (tmp_path / "bad.res").write_text(MESSY)
    result = _cli("--check", ".", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "bad.res\n")
    assert (tmp_path / "bad.res").read_text() == MESSY


def test_check_passes_on_the_shipped_specs_and_prelude() -> None:
    result = _cli("--check", "specs", "grammars/prelude.res", cwd=ROOT)
    assert (result.returncode, result.stdout) == (0, "")


def test_in_place_rewrites_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.res").write_text(MESSY)
    assert _cli("bad.res", cwd=tmp_path).returncode == 0
    assert (tmp_path / "bad.res").read_text() == CANONICAL


def test_diff_prints_the_changes_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.res").write_text(MESSY)
    result = _cli("--diff", "bad.res", cwd=tmp_path)
    assert result.returncode == 0
    assert "\n-param   n=3   # trailing\n" in result.stdout and "\n+param n = 3  # trailing\n" in result.stdout
    assert (tmp_path / "bad.res").read_text() == MESSY


def test_stdin_goes_to_stdout(tmp_path: Path) -> None:
    result = _cli("-", cwd=tmp_path, stdin=MESSY)
    assert (result.returncode, result.stdout) == (0, CANONICAL)


def test_syntax_error_is_located_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "broken.res").write_text("network n {\n  input 3x32x32\n")
    result = _cli("broken.res", cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.res:2:16: error:" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "broken.res").read_text() == "network n {\n  input 3x32x32\n"


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    result = _cli("absent.res", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "error: absent.res: no such file or folder\n")


def test_comments_stay_on_their_lines_and_in_their_order() -> None:
    text = "# one\nnetwork n {  # two\n  # three\n  input 3x32x32  # four\n  # five\n}\n# six\n"
    assert format_text(text.replace("  input", "input").replace("{  #", "{ #")) == text


def test_line_continuation_indents_the_rest_of_the_statement() -> None:
    text = "network n {\n  stem {\n  conv 3x3, \\\n 16\n  }\n}\n"
    assert format_text(text) == "network n {\n  stem {\n    conv 3x3, \\\n        16\n  }\n}\n"


ONE_LINE_MESSY = "network n {\n      input   3x32x32\n}\n"
ONE_LINE_CANONICAL = "network n {\n  input 3x32x32\n}\n"


def test_a_symlink_has_its_target_formatted_and_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "real.res").write_text(ONE_LINE_MESSY)
    (tmp_path / "link.res").symlink_to("real.res")
    result = _cli("link.res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link.res").is_symlink()
    assert (tmp_path / "real.res").read_text() == ONE_LINE_CANONICAL


def test_in_place_keeps_the_mode_of_the_file_it_rewrites(tmp_path: Path) -> None:
    spec = tmp_path / "net.res"
    spec.write_text(ONE_LINE_MESSY)
    spec.chmod(0o640)
    assert _cli("net.res", cwd=tmp_path).returncode == 0
    assert (spec.read_text(), stat.S_IMODE(spec.stat().st_mode)) == (ONE_LINE_CANONICAL, 0o640)


def test_a_spec_with_a_byte_order_mark_is_formatted_as_check_reads_it(tmp_path: Path) -> None:
    (tmp_path / "bom.res").write_bytes(b"\xef\xbb\xbf" + ONE_LINE_MESSY.encode())
    assert run_resdsl("check", "bom.res", cwd=tmp_path).returncode == 0  # the rest of resdsl reads it
    result = _cli("bom.res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bom.res").read_text(encoding="utf-8-sig") == ONE_LINE_CANONICAL


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.res"
    with huge.open("wb") as file:
        file.truncate(3 << 30)  # sparse: 3 GiB that take no disk
    result = _cli("huge.res", cwd=tmp_path, memory=1 << 30)
    assert result.returncode == 1
    assert "over the limit" in result.stderr and "out of memory" not in result.stderr


def test_a_named_pipe_is_said_to_be_no_regular_file_not_missing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.res")
    result = _cli("pipe.res", cwd=tmp_path, timeout=20)
    assert result.returncode == 1
    assert "no such file" not in result.stderr and "not a regular file" in result.stderr


def test_an_endless_stdin_stops_at_the_size_limit(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run([sys.executable, "-m", "resdsl", "fmt", "-"], cwd=tmp_path, stdin=endless,
                              capture_output=True, timeout=30, preexec_fn=lambda: resource.setrlimit(
                                  resource.RLIMIT_AS, (1 << 30, 1 << 30)))
    assert done.returncode == 1 and b"over the limit" in done.stderr and done.stdout == b""


def test_stdin_that_is_not_utf8_is_said_so_as_for_a_file(tmp_path: Path) -> None:
    result = _cli("-", cwd=tmp_path, stdin=b"network n {\n  input 3x32x32 \xff\n}\n")
    assert result.returncode == 1
    assert "not UTF-8" in result.stderr and "\\udc" not in result.stderr
