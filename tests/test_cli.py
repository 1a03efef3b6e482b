"""The CLI's one way to fail, its global options, and the checks on file paths it is given."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import resdsl
from resdsl.cli import common
from resdsl.cli.app import app

BAD_SPECS = Path(__file__).resolve().parent / "bad_specs"


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@pytest.mark.parametrize("error, status, line", [
    (_oserror(errno.ENOSPC, "runs/r/last.pt"), 1, f"error: runs/r/last.pt: {os.strerror(errno.ENOSPC)}"),
    (_oserror(errno.EACCES, "/etc/out.svg"), 1, f"error: /etc/out.svg: {os.strerror(errno.EACCES)}"),
    (_oserror(errno.EROFS, "/ro/model.onnx"), 1, f"error: /ro/model.onnx: {os.strerror(errno.EROFS)}"),
    (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "out"), 1, f"error: out: {os.strerror(errno.EISDIR)}"),
    (OSError(errno.EXDEV, os.strerror(errno.EXDEV), ".tmp123", None, "target.pt"), 1,
     f"error: target.pt: {os.strerror(errno.EXDEV)}"),
    (resdsl.UsageError("--set n: 'x' is not a number"), 2, "error: --set n: 'x' is not a number"),
    (KeyboardInterrupt(), 130, "resdsl zoo: interrupted"),
    (ModuleNotFoundError("No module named 'tensorboard.summary'", name="tensorboard.summary"), 1,
     "error: resdsl zoo needs tensorboard: pip install 'resdsl[tensorboard]'"),
], ids=["ENOSPC", "EACCES", "EROFS", "EISDIR", "rename", "usage", "ctrl-c", "extra"])
def test_an_error_escaping_a_command_is_one_line(monkeypatch, error, status, line):
    def fails() -> None:
        raise error

    monkeypatch.setattr(resdsl.zoo, "specs", fails)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["zoo"])
    assert (result.exit_code, result.stderr.splitlines()) == (status, [line])


def test_running_out_of_memory_is_one_sentence(monkeypatch):
    monkeypatch.setattr(resdsl.zoo, "specs", lambda: [0] * (1 << 62))
    result = CliRunner().invoke(app, ["zoo"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the machine ran out of memory") and len(result.stderr.splitlines()) == 1


def test_an_internal_error_says_how_to_see_the_traceback(monkeypatch):
    monkeypatch.setattr(resdsl.zoo, "specs", lambda: 1 / 0)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["zoo"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "internal error in resdsl zoo (ZeroDivisionError: division by zero)" in line and "RESDSL_DEBUG=1" in line

    monkeypatch.setenv("RESDSL_DEBUG", "1")
    assert isinstance(CliRunner().invoke(app, ["zoo"]).exception, ZeroDivisionError)


def test_a_spec_error_is_rendered_at_its_place():
    result = CliRunner().invoke(app, ["info", str(BAD_SPECS / "unknown_op.res")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{BAD_SPECS / 'unknown_op.res'}:") and ": error: " in result.stderr
    assert "Traceback" not in result.stderr


def test_version_is_the_packages():
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"resdsl {resdsl.__version__}\n")


def test_completion_script_is_shown_for_bash():
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="resdsl")
    assert result.exit_code == 0
    assert "_RESDSL_COMPLETE=complete_bash" in result.stdout and "complete " in result.stdout


def test_completion_names_the_commands():
    env = {"_RESDSL_COMPLETE": "complete_bash", "COMP_WORDS": "resdsl tr", "COMP_CWORD": "1"}
    result = CliRunner().invoke(app, [], env=env, prog_name="resdsl")
    assert result.stdout.split() == ["train"]


def test_a_command_imports_only_its_own_module():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom resdsl.cli.app import app\n"
            "assert CliRunner().invoke(app, ['zoo', '--json']).exit_code == 0\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('resdsl.cli.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["resdsl.cli.app", "resdsl.cli.zoo"]


@pytest.fixture
def odd_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"a named pipe": fifo, "a directory": tmp_path, "a character device": Path("/dev/zero")}


@pytest.mark.parametrize("check, flag, ending", [
    (common.regular_file, "--weights", ", not a regular file"),
    (common.output_file, "-o", "; give the name of a file to write"),
], ids=["read", "write"])
@pytest.mark.parametrize("kind", ["a named pipe", "a directory", "a character device"])
def test_a_special_file_is_refused_where_a_file_is_named(odd_paths, capsys, check, flag, ending, kind):
    with pytest.raises(typer.Exit) as stop:
        check(odd_paths[kind], flag)
    assert stop.value.exit_code == 1
    assert capsys.readouterr().err == f"error: {flag} {odd_paths[kind]} is {kind}{ending}\n"


def test_a_missing_file_to_read_is_named(tmp_path, capsys):
    with pytest.raises(typer.Exit):
        common.regular_file(tmp_path / "none.pt", "--weights")
    assert capsys.readouterr().err == f"error: --weights {tmp_path / 'none.pt'}: no such file\n"


def test_an_output_may_be_new_or_a_regular_file(tmp_path):
    (tmp_path / "old.png").write_bytes(b"")
    assert common.output_file(tmp_path / "old.png", "-o") == tmp_path / "old.png"
    assert common.output_file(tmp_path / "new.png", "-o") == tmp_path / "new.png"
