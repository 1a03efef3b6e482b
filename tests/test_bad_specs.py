"""Broken specs, one per mistake a user makes: each exits 1 with `FILE:LINE:COL: error:`, a caret, no traceback.

Each file in tests/bad_specs/ starts with `# expect: LINE:COL: message fragment`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdsl.cli.app import app

BAD_SPECS = Path(__file__).resolve().parent / "bad_specs"
_EXPECT = re.compile(r"# expect: (\d+):(\d+): (.+)")


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", *args])
    return result.exit_code, result.stderr


def _expectation(path: Path) -> tuple[int, int, str]:
    match = _EXPECT.fullmatch(path.read_text().splitlines()[0])
    assert match, f"{path.name} lacks its `# expect: LINE:COL: fragment` line"
    return int(match[1]), int(match[2]), match[3]


def _assert_caret_under(output: str, line_text: str, column: int) -> None:
    """The quoted source line is followed by a caret at `column`."""
    lines = output.splitlines()
    quoted = "  " + line_text
    for index, shown in enumerate(lines[:-1]):
        if shown == quoted and lines[index + 1].startswith("  " + " " * (column - 1) + "^"):
            return
    raise AssertionError(f"no caret at column {column} under {line_text!r} in:\n{output}")


def test_there_are_at_least_forty_bad_specs():
    assert len(list(BAD_SPECS.glob("*.res"))) >= 40


@pytest.mark.parametrize("path", sorted(BAD_SPECS.glob("*.res")), ids=lambda p: p.stem)
def test_bad_spec_is_reported_at_the_construct_at_fault(path):
    line, column, fragment = _expectation(path)
    status, output = _check(str(path))
    assert status == 1, output
    assert "Traceback" not in output
    headline = re.search(rf"^{re.escape(str(path))}:{line}:{column}: error: (.*)$", output, re.MULTILINE)
    assert headline, f"expected an error at {line}:{column}, got:\n{output}"
    assert fragment in headline[1]
    _assert_caret_under(output, path.read_text().splitlines()[line - 1], column)


def test_spec_over_one_megabyte_is_refused(tmp_path):
    path = tmp_path / "huge.res"
    path.write_text("# padding\n" * 110_000 + "network t { input 3x32x32 }\n")
    status, output = _check(str(path))
    assert status == 1
    assert f"{path}:1:1: error: cannot read this spec: it is 1,100,028 bytes, over the limit of 1,000,000" in output
    assert "Traceback" not in output


def test_independent_errors_in_one_file_are_all_reported(tmp_path):
    path = tmp_path / "two.res"
    path.write_text("network t {\n  input 3x32x32\n  stem {\n    conv 3x3, 16, strides 2\n"
                    "    batchnrom\n  }\n}\n")
    status, output = _check(str(path))
    assert status == 1
    assert f"{path}:4:19: error: unknown argument of conv 'strides'" in output
    assert f"{path}:5:5: error: unknown op or block 'batchnrom'" in output
    assert "    conv 3x3, 16, strides 2" in output and "    batchnrom" in output


def _zero_width_layer1(tmp_path, layer2: str):
    """A spec whose layer1 has width 0, followed by `layer2`."""
    path = tmp_path / "stages.res"
    path.write_text("network t {\n  input 3x32x32\n  stem { conv 3x3, 16 }\n"
                    f"  stages (block: basic, shortcut: A) {{\n    layer1: 2 x 0\n    {layer2}\n  }}\n}}\n")
    return path


def test_errors_in_several_stages_are_all_reported(tmp_path):
    path = _zero_width_layer1(tmp_path, "layer2: 2 x 8, stride 0")
    status, output = _check(str(path))
    assert status == 1
    assert f"{path}:5:17: error: stage width must be a positive integer, got 0" in output
    assert f"{path}:6:27: error: stage stride must be a positive integer, got 0" in output


def test_stage_after_a_failed_stage_is_not_checked_against_a_guessed_input(tmp_path):
    path = _zero_width_layer1(tmp_path, "layer2: 2 x 8, stride 2")
    status, output = _check(str(path))
    assert status == 1
    assert output.count("error:") == 1  # layer2's input width is unknown, not the stem's 16


def test_error_in_a_builtin_block_notes_the_prelude_line():
    status, output = _check(str(BAD_SPECS / "option_a_shrinks_channels.res"))
    assert status == 1
    assert re.search(r"prelude\.res:\d+:\d+: note: in this built-in definition\n\s+pad_channels out_channels",
                     output)


def test_error_in_a_user_block_notes_the_stage_line():
    path = BAD_SPECS / "groups_do_not_divide_in_block.res"
    status, output = _check(str(path))
    assert status == 1
    assert f"{path}:12:5: note: instantiated here" in output


def test_missing_brace_at_end_of_file_notes_the_brace_left_open():
    path = BAD_SPECS / "missing_closing_brace.res"
    _, output = _check(str(path))
    assert f"{path}:4:8: note: this '{{' is not closed" in output  # stem's: the last '}' lines up with network's


def test_section_after_unclosed_block_notes_that_block(tmp_path):
    path = tmp_path / "stem_open.res"
    path.write_text("network t {\n  input 3x32x32\n  stem {\n    conv1: conv 3x3, 16\n"
                    "  stages {\n    layer1: 1 x 16, block: basic\n  }\n  head { avgpool; fc: linear 10 }\n}\n")
    _, output = _check(str(path))
    assert f"{path}:5:3: error: unexpected 'stages'" in output
    assert f"{path}:3:8: note: this '{{' is not closed" in output


def test_one_bad_spec_among_good_ones_fails_the_run():
    good = Path(__file__).resolve().parent.parent / "specs" / "cifar20.res"
    result = CliRunner().invoke(app, ["check", str(good), str(BAD_SPECS / "unknown_op.res")])
    assert result.exit_code == 1
    assert f"{good}: ok" in result.stdout


def test_missing_file_is_one_plain_error():
    status, output = _check("no/such/spec.res")
    assert status == 1
    assert output.strip() == "error: no such file: no/such/spec.res"


def test_set_of_an_undeclared_param_is_a_usage_error():
    result = CliRunner().invoke(app, ["check", "cifar20", "--set", "depth=3"])
    assert result.exit_code == 2
    assert "the spec declares no param 'depth'" in result.stderr
    assert "Traceback" not in result.stderr


def test_set_without_equals_is_a_usage_error():
    result = CliRunner().invoke(app, ["check", "cifar20", "--set", "n"])
    assert result.exit_code == 2
    assert "--set expects NAME=VALUE" in result.stderr


@pytest.mark.parametrize("value", ["1_000", "\u0663", "inf", "nan", "3x", "1e999"])
def test_set_value_the_language_would_not_read_is_a_usage_error(value: str):
    result = CliRunner().invoke(app, ["check", "cifar20", "--set", f"n={value}"])
    assert result.exit_code == 2
    assert "--set n:" in result.stderr and "Traceback" not in result.stderr


def test_every_token_a_syntax_error_may_expect_is_named_in_the_users_words():
    from resdsl.parser import _TOKEN_WORDS, _parser

    parser = _parser().lark
    for terminal in parser.terminals:
        if terminal.name in parser.lexer_conf.ignore:
            continue
        literal = terminal.pattern.type == "str" and terminal.pattern.value == terminal.name.lower()
        assert terminal.name in _TOKEN_WORDS or literal, f"{terminal.name} would be shown as {terminal.name.lower()!r}"
