"""The CLI's one way to fail, its global options, and the checks on file paths it is given."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import run_resdsl
from typer.testing import CliRunner

import resdsl
from resdsl.cli import common
from resdsl.cli.app import COMMANDS, app

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


@pytest.mark.torch
def test_torch_failing_to_allocate_cpu_memory_is_reported_as_out_of_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """torch raises RuntimeError, not MemoryError, when the CPU allocator fails (a batch too large for the RAM):
    that is the machine running out of memory, not an internal error to report."""
    import torch

    from resdsl.cli.app import report

    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)  # refused by the allocator, nothing allocated
    assert report(caught.value, ["train"]) == 1
    assert capsys.readouterr().err == ("error: the machine ran out of memory during resdsl train; try a smaller batch, "
                                       "input or network\n")


def test_an_internal_error_says_how_to_see_the_traceback(monkeypatch):
    monkeypatch.setattr(resdsl.zoo, "specs", lambda: 1 / 0)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["zoo"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "internal error in resdsl zoo (ZeroDivisionError: division by zero)" in line and "RESDSL_DEBUG=1" in line

    monkeypatch.setenv("RESDSL_DEBUG", "1")
    assert isinstance(CliRunner().invoke(app, ["zoo"]).exception, ZeroDivisionError)


def test_check_reads_a_spec_file_whose_name_holds_a_brace(tmp_path: Path) -> None:
    (tmp_path / "net{v2}.res").write_text("network n {\n  input 3x32x32\n}\n")
    result = run_resdsl("check", "net{v2}.res", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "net{v2}.res: ok (n, 0 params, 0.000 GMACs)\n"), result.stderr


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


CIFAR20 = Path(__file__).resolve().parent.parent / "specs" / "cifar20.res"
HUGE_SEED = "99999999999999999999"  # over 2**64: torch.manual_seed overflows


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_error(result) -> str:
    """The one `error:` line a failed command printed (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


TORCH_COMMANDS = ("build", "bench", "train", "eval", "plot")  # they need torch (plot: matplotlib's numpy)


def torch_if_needed(*case: object) -> object:
    """A parametrize case whose command (its first word) needs torch carries the torch marker."""
    args = case[0]
    return pytest.param(*case, marks=[pytest.mark.torch] if args[0] in TORCH_COMMANDS else [])


USAGE_ERRORS = [
    (("train", CIFAR20, "--seed", HUGE_SEED), "--seed must be a whole number from 0 to 2**63-1"),
    (("build", CIFAR20, "--backend", "onnx", "-o", "o.onnx", "--seed", HUGE_SEED),
     "--seed must be a whole number from 0 to 2**63-1"),
    (("train", CIFAR20, "--seed", "-1"), "--seed must be a whole number from 0 to 2**63-1"),
    (("train", CIFAR20, "--out", ""), "--out is empty: give a folder"),
    (("train", CIFAR20, "--data", ""), "--data is empty: give the dataset's folder"),
    (("train", CIFAR20, "--weights", ""), "--weights is empty: give a weights file"),
    (("eval", CIFAR20, "--weights", "w.pt", "--data", ""), "--data is empty: give the dataset's folder"),
    (("eval", ""), "SPEC is empty: give a spec file, a zoo name or a run folder"),
    (("check", CIFAR20, ""), "SPEC is empty: give a spec file (.res) or a zoo name"),
    (("info", " "), "SPEC is empty: give a spec file (.res) or a zoo name"),
    (("viz", CIFAR20, "-o", ""), "-o is empty: give a file to write"),
    (("build", CIFAR20, "--backend", "onnx", "-o", ""), "-o is empty: give the artifact's file name"),
    (("build", CIFAR20, "--backend", "onnx", "-o", "o.onnx", "--weights", ""), "--weights is empty"),
    (("plot", ""), "RUN_DIR is empty: give a run's folder"),
    (("plot", "run", "-o", ""), "-o is empty: give a file to write"),
    (("train", CIFAR20, "--device", "tpu"), "--device takes cpu, cuda or cuda:N, not 'tpu'"),
    (("eval", CIFAR20, "--weights", "w.pt", "--device", "cuda0"), "--device takes cpu, cuda or cuda:N, not 'cuda0'"),
    (("train", CIFAR20, "--workers", "100000"), f"--workers must be from 0 to {4 * len(os.sched_getaffinity(0))} "
                                                f"(4 x the {len(os.sched_getaffinity(0))} CPUs usable here)"),
    (("eval", CIFAR20, "--weights", "w.pt", "--workers", "-1"), "--workers must be from 0 to"),
    (("build", CIFAR20, "--backend", "onnx", "-o", "c.res"), "-o c.res ends in .res, the suffix of a spec"),
    (("build", CIFAR20, "--backend", "onnx", "-o", "o.onnx", "--features", "layer1,layer2,layer1"),
     "--features names layer1 more than once"),
    (("train", CIFAR20, "--lr", "1e400"), "--lr must be a finite number, not inf"),
    (("train", CIFAR20, "--weight-decay", "nan"), "--weight-decay must be a finite number, not nan"),
]


@pytest.mark.parametrize("args, message", [torch_if_needed(*case) for case in USAGE_ERRORS],
                         ids=[" ".join([a[0], *(str(x) or "''" for x in a[2:])]) for a, _ in USAGE_ERRORS])
def test_a_bad_flag_value_is_a_usage_error_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # an empty path used to mean the working folder
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in one_error(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_the_largest_seed_taken_is_one_torch_takes(capsys):
    import torch

    from resdsl.resolve import SEED_MAX

    assert common.check_seed(SEED_MAX) == 2**63 - 1
    torch.Generator().manual_seed(SEED_MAX)
    with pytest.raises(typer.Exit) as stop:
        common.check_seed(SEED_MAX + 1)
    assert stop.value.exit_code == 2 and "--seed must be" in capsys.readouterr().err


@pytest.mark.parametrize("command, flag, what", [torch_if_needed(*case) for case in [
    (("build", "{spec}", "--backend", "onnx", "-o", "{spec}"), "-o", "the spec"),
    (("build", CIFAR20, "--backend", "pytorch", "-o", "{weights}", "--weights", "{weights}"), "-o",
     "the --weights file"),
    (("viz", "{spec}", "-o", "{spec}"), "-o", "the spec"),
]], ids=["build spec", "build weights", "viz spec"])
def test_an_output_that_is_an_input_is_refused(tmp_path, command, flag, what):
    spec = tmp_path / "net.dot"  # a spec named like the output it must not become
    spec.write_bytes(CIFAR20.read_bytes())
    (tmp_path / "w.pt2").write_bytes(b"weights")
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    args = [str(arg).format(spec=spec, weights=tmp_path / "w.pt2") for arg in command]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert one_error(result) == f"error: {flag} {args[args.index(flag) + 1]} is {what} this command reads; " \
                                "give another file to write"
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_an_output_through_another_name_of_the_spec_is_refused(tmp_path):
    (tmp_path / "net.res").write_bytes(CIFAR20.read_bytes())
    os.link(tmp_path / "net.res", tmp_path / "net.svg")
    result = invoke("viz", tmp_path / "net.res", "-o", tmp_path / "net.svg")
    assert result.exit_code == 1 and "is the spec this command reads" in one_error(result)
    assert (tmp_path / "net.svg").read_bytes() == CIFAR20.read_bytes()


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"kind": "train", "iteration": 1, "train_error": 0.5}\n')
    return run


@pytest.mark.parametrize("command", [torch_if_needed(case) for case in [
    ("build", CIFAR20, "--backend", "onnx", "-o", "{fifo}"),
    ("build", CIFAR20, "--backend", "pytorch", "-o", "{fifo}"),
    ("viz", CIFAR20, "-o", "{fifo}"),
    ("plot", "{run}", "-o", "{fifo}"),
]], ids=["build onnx", "build pytorch", "viz", "plot"])
def test_a_named_pipe_as_output_is_refused_and_kept(tmp_path, finished_run, command):
    fifo = tmp_path / "out.svg"
    os.mkfifo(fifo)
    result = invoke(*[str(arg).format(fifo=fifo, run=finished_run) for arg in command])
    assert result.exit_code == 1, result.output
    assert one_error(result) == f"error: -o {fifo} is a named pipe; give the name of a file to write"
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["out.svg", "run"]


@pytest.mark.parametrize("make, kind", [(os.mkfifo, "a named pipe"), (os.mkdir, "a directory")])
def test_plot_says_what_a_metrics_file_that_is_not_a_file_is(tmp_path, make, kind):
    (tmp_path / "run").mkdir()
    make(tmp_path / "run" / "metrics.jsonl")
    result = invoke("plot", tmp_path / "run", "-o", tmp_path / "curves.png")
    assert result.exit_code == 1
    assert one_error(result) == f"error: {tmp_path / 'run' / 'metrics.jsonl'} is {kind}, not a metrics file"


@pytest.mark.torch
def test_eval_of_a_path_that_does_not_exist_names_it(tmp_path):
    result = invoke("eval", tmp_path / "runs" / "gone", "--data", tmp_path)
    assert result.exit_code == 1
    assert one_error(result) == f"error: no such file or folder: {tmp_path / 'runs' / 'gone'}"


@pytest.fixture
def full_dir(tmp_path: Path):
    """A folder on a 4 KiB tmpfs that a 4 KiB file fills (root only: mounting needs it)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount for a tiny tmpfs")
    (folder / "filler").write_bytes(b"\0" * 4096)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("folder, reason", [("read_only_dir", (errno.EROFS, errno.EACCES)),
                                            ("full_dir", (errno.ENOSPC,))], ids=["read-only", "full"])
@pytest.mark.parametrize("command", [torch_if_needed(("viz", CIFAR20, "-o", "{out}.svg")),
                                     torch_if_needed(("plot", "{run}", "-o", "{out}.png"))], ids=["viz", "plot"])
def test_a_failed_write_names_the_output_and_leaves_nothing(request, finished_run, folder, reason, command):
    where = request.getfixturevalue(folder)
    before = sorted(where.iterdir())
    args = [str(arg).format(out=where / "x", run=finished_run) for arg in command]
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    reasons = [os.strerror(code) for code in reason]
    assert one_error(result) in [f"error: cannot write {args[-1]}: {text}" for text in reasons]
    assert sorted(where.iterdir()) == before


def test_folders_to_make_are_the_missing_ones_deepest_first(tmp_path, monkeypatch):
    from resdsl.files import folders_to_make

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    assert folders_to_make(Path("a/b/c")) == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b"]
    assert folders_to_make(Path("a")) == []


def test_an_atomic_write_error_names_the_target_not_the_temp_file(tmp_path):
    from resdsl.files import atomic_write

    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as raised, atomic_write(tmp_path / "file" / "x.svg"):
        pass
    assert raised.value.filename == str(tmp_path / "file" / "x.svg")
    with pytest.raises(OSError) as raised, atomic_write(tmp_path / "x.svg"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk fails a write: no file named
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(tmp_path / "x.svg"))
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


TYPE_PLACEHOLDER = r"<(str|int|float|bool|Path|list\[\w+\])>|\{\w+\}"  # typer's default metavars


def _help(*words: str) -> str:
    result = CliRunner().invoke(app, [*words, "--help"], prog_name="resdsl", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_ordinary_metavars_not_type_placeholders(command):
    text = _help(*[command] if command else [])
    assert not re.search(TYPE_PLACEHOLDER, text), text


@pytest.mark.parametrize("command, usage", [
    ("info", "resdsl info [OPTIONS] SPEC"), ("check", "resdsl check [OPTIONS] SPECS..."),
    ("plot", "resdsl plot [OPTIONS] RUNS..."),
])
def test_help_usage_names_arguments_in_capitals(command, usage):
    assert usage in _help(command)


@pytest.mark.parametrize("command, option, metavar", [
    ("build", "--batch", "N"), ("build", "--output", "PATH"), ("train", "--lr", "X"), ("info", "--set", "NAME=VALUE"),
    ("build", "--input", "CxHxW"),
])
def test_help_shows_an_options_metavar(command, option, metavar):
    assert re.search(rf"{option}\s.*?\s{re.escape(metavar)}\s", _help(command))


@pytest.mark.parametrize("command, flag, description", [
    ("info", "--json", "Print the summary as JSON."), ("build", "--no-fold", "Keep the training graph"),
    ("check", "--help", "Show this message"),
])
def test_help_shows_no_value_for_a_flag(command, flag, description):
    assert re.search(rf"{flag}\s+{description}", _help(command))


def test_help_does_not_break_a_sentence_where_the_docstring_wrapped():
    # viz's docstring wraps after "the failing"; at 200 columns its summary is one line
    assert "the failing nodes in red" in _help("viz")
