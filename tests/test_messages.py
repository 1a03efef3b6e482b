"""Messages never leak a file that is not a spec, nor pass a terminal escape sequence through, and Graphviz's
failures are resdsl's own sentence."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import resdsl
from resdsl.cli.app import app

SECRET = "the password is hunter2"
TINY = "network t {\n  input 3x8x8\n  stem { conv1: conv 3x3, 4 }\n  head { avgpool; fc: linear 2 }\n}\n"


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", *args])
    return result.exit_code, result.stderr


def test_a_text_file_given_as_the_spec_is_named_and_not_quoted(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(f"{SECRET}\nmore\n")
    status, output = _check(str(notes))
    assert status == 1
    assert output == (f"{notes}:1:1: error: cannot read this file: it is not a resdsl spec (a spec starts with "
                      "`network`, `block`, `shortcut`, `param` or `override`)\n")


def test_extends_of_a_system_file_quotes_only_the_childs_line(tmp_path):
    child = tmp_path / "child.res"
    child.write_text('network t extends "/etc/passwd" {\n}\n')
    status, output = _check(str(child))
    assert status == 1
    assert f"{child}:1:11: error: cannot extend '/etc/passwd': it is not a resdsl spec" in output
    assert "root:x" not in output and len(output.splitlines()) == 3


def test_extends_of_a_proc_file_with_nul_bytes_is_refused_as_binary(tmp_path):
    child = tmp_path / "child.res"
    child.write_text('network t extends "/proc/self/environ" {\n}\n')
    status, output = _check(str(child))
    assert status == 1
    assert "it is a binary file, not spec text (it holds NUL bytes)" in output
    assert "PATH=" not in output


def test_a_spec_with_a_mistake_on_its_first_line_is_still_quoted(tmp_path):
    spec = tmp_path / "t.res"
    spec.write_text("netwrok t {\n}\n")
    status, output = _check(str(spec))
    assert status == 1
    assert "  netwrok t {" in output


def test_escape_sequences_in_a_quoted_line_are_shown_escaped_with_the_caret_under_the_fault(tmp_path):
    spec = tmp_path / "t.res"
    spec.write_text("network t {\n  input 3x8x8\n  \x1b]0;pwned\x07 stem { }\n}\n")
    status, output = _check(str(spec))
    assert status == 1
    assert "\x1b" not in output and "\x07" not in output
    assert output.splitlines()[1:3] == ["    \\x1b]0;pwned\\x07 stem { }", "    ^~~~"]


def test_caret_sits_under_the_error_after_wide_characters_on_the_line(tmp_path):
    """A terminal shows each CJK character two cells wide: the caret must move by the cells, not the characters."""
    prefix = '  stem { relu; x = "日本語"; '
    spec = tmp_path / "wide.res"
    spec.write_text(f"network a {{\n  input 3x32x32\n{prefix}bogus 3 }}\n}}\n")
    _, output = _check(str(spec))
    quote, caret = output.splitlines()[1:3]
    assert quote == f"  {prefix}bogus 3 }}"
    assert caret == " " * (2 + len(prefix) + 3) + "^~~~~"  # 3 characters of two cells each before it


def test_caret_does_not_move_for_marks_a_terminal_draws_on_the_character_before(tmp_path):
    """Thai's vowel sign U+0E31 and the enclosing keycap U+20E3 take no cell (as wcwidth counts them), though
    unicodedata.combining() gives them class 0."""
    prefix = '  stem { relu; x = "\u0e01\u0e31 1\u20e3"; '
    spec = tmp_path / "marks.res"
    spec.write_text(f"network a {{\n  input 3x32x32\n{prefix}bogus 3 }}\n}}\n")
    _, output = _check(str(spec))
    caret = output.splitlines()[2]
    assert caret == " " * (2 + len(prefix) - 2) + "^~~~~"  # the two marks before it take no cell


def test_a_bidirectional_override_in_a_path_is_shown_escaped(tmp_path):
    spec = tmp_path / "evil\u202egnp.res"
    spec.write_text("network t {\n  input 0x8x8\n}\n")
    status, output = _check(str(spec))
    assert status == 1
    assert "\u202e" not in output and "evil\\u202egnp.res:2:3: error:" in output


def test_a_symlink_loop_given_as_the_spec_is_one_sentence(tmp_path):
    (tmp_path / "a.res").symlink_to(tmp_path / "b.res")
    (tmp_path / "b.res").symlink_to(tmp_path / "a.res")
    status, output = _check(str(tmp_path / "a.res"))
    assert status == 1
    assert output.endswith("error: cannot read this spec: Too many levels of symbolic links\n")


# --- resdsl viz: the default output and Graphviz's failures ------------------------------------------------------

def _viz(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    spec = tmp_path / "tiny.res"
    spec.write_text(TINY)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        return CliRunner().invoke(app, ["viz", str(spec), *args], env=env)
    finally:
        os.chdir(old)


def test_viz_without_o_writes_the_specs_name_as_svg_in_the_current_folder(tmp_path):
    result = _viz(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == "wrote tiny.svg\n"
    assert (tmp_path / "tiny.svg").read_text().lstrip().startswith("<?xml")


def _fake_dot(tmp_path: Path, script: str) -> dict[str, str]:
    folder = tmp_path / "bin"
    folder.mkdir()
    dot = folder / "dot"
    dot.write_text(f"#!/bin/sh\n{script}\n")
    dot.chmod(dot.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(("script", "sentence"), [
    ("echo 'Error: trouble in line 3' >&2; exit 1",
     "error: Graphviz could not draw the diagram (Error: trouble in line 3); write .dot to see what it was given\n"),
    ("kill -SEGV $$",
     "error: Graphviz's dot was killed by signal 11 while drawing the diagram (too large for it?); draw fewer "
     "nodes (--level stage or block), or write .dot\n"),
    ("printf 'Error: \\033[2Jcleared' >&2; exit 3",
     "error: Graphviz could not draw the diagram (Error: \\x1b[2Jcleared); write .dot to see what it was given\n"),
], ids=["fails", "crashes", "escape_in_its_stderr"])
def test_graphviz_failure_is_one_sentence_and_writes_nothing(tmp_path, script, sentence):
    result = _viz(tmp_path, "-o", "out.svg", env=_fake_dot(tmp_path, script))
    assert result.exit_code == 1
    assert result.stderr == sentence
    assert not (tmp_path / "out.svg").exists()


def test_graphviz_that_hangs_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr("resdsl.viz.DOT_TIMEOUT_SECONDS", 1)
    result = _viz(tmp_path, "-o", "out.svg", env=_fake_dot(tmp_path, "exec sleep 30"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Graphviz took more than 1 s to lay out the diagram and was stopped")


def test_graphviz_warnings_do_not_reach_the_terminal(tmp_path):
    result = _viz(tmp_path, "-o", "out.svg", env=_fake_dot(tmp_path, "echo 'Warning: scaling' >&2; echo '<svg/>'"))
    assert result.exit_code == 0
    assert result.stderr == ""


def test_a_spec_is_text_from_compile_even_when_it_names_a_text_file(tmp_path):
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile(str(tmp_path / "missing.txt"))
    assert "no such file" in str(caught.value)
