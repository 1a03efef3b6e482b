"""Adversarial review (bad input and edges): each test is one bug found, failing on the code it was found in."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import resdsl

MESSY = "network n {\n      input   3x32x32\n}\n"
CANONICAL = "network n {\n  input 3x32x32\n}\n"


def _cli(*args: str, cwd: Path, memory: int | None = None, stdin: bytes | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m resdsl ARGS`, its address space capped at `memory` bytes if given."""

    def cap() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    done = subprocess.run([sys.executable, "-m", "resdsl", *args], cwd=cwd, input=stdin, capture_output=True,
                          timeout=timeout, preexec_fn=cap)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def test_fmt_formats_the_target_of_a_symlink_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "real.res").write_text(MESSY)
    (tmp_path / "link.res").symlink_to("real.res")
    result = _cli("fmt", "link.res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link.res").is_symlink()
    assert (tmp_path / "real.res").read_text() == CANONICAL


def test_fmt_keeps_the_mode_of_the_file_it_rewrites(tmp_path: Path) -> None:
    spec = tmp_path / "net.res"
    spec.write_text(MESSY)
    spec.chmod(0o640)
    assert _cli("fmt", "net.res", cwd=tmp_path).returncode == 0
    assert (spec.read_text(), stat.S_IMODE(spec.stat().st_mode)) == (CANONICAL, 0o640)


def test_fmt_formats_a_spec_with_a_byte_order_mark_as_check_reads_it(tmp_path: Path) -> None:
    (tmp_path / "bom.res").write_bytes(b"\xef\xbb\xbf" + MESSY.encode())
    assert _cli("check", "bom.res", cwd=tmp_path).returncode == 0  # the rest of resdsl reads it
    result = _cli("fmt", "bom.res", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bom.res").read_text(encoding="utf-8-sig") == CANONICAL


def test_fmt_refuses_a_file_over_the_size_limit_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.res"
    with huge.open("wb") as file:
        file.truncate(3 << 30)  # sparse: 3 GiB that take no disk
    result = _cli("fmt", "huge.res", cwd=tmp_path, memory=1 << 30)
    assert result.returncode == 1
    assert "over the limit" in result.stderr and "out of memory" not in result.stderr


def test_fmt_of_a_named_pipe_says_what_it_is_not_that_it_is_missing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.res")
    result = _cli("fmt", "pipe.res", cwd=tmp_path, timeout=20)
    assert result.returncode == 1
    assert "no such file" not in result.stderr and "not a regular file" in result.stderr


def _frames(*messages: dict | bytes) -> bytes:
    """Each message framed with its Content-Length; a bytes message is a body sent as it is."""
    bodies = [message if isinstance(message, bytes) else json.dumps(message).encode() for message in messages]
    return b"".join(b"Content-Length: %d\r\n\r\n%s" % (len(body), body) for body in bodies)


def _lsp_session(*requests: dict | bytes) -> bytes:
    """An editor's whole session around `requests`: initialize first, shutdown and exit last."""
    return _frames({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
                   {"jsonrpc": "2.0", "method": "initialized", "params": {}}, *requests,
                   {"jsonrpc": "2.0", "id": 99, "method": "shutdown"}, {"jsonrpc": "2.0", "method": "exit"})


def _hover(uri: str) -> dict:
    return {"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover",
            "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}}


def test_lsp_request_about_an_unopened_named_pipe_neither_hangs_nor_reads_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.res")
    result = _cli("lsp", cwd=tmp_path, stdin=_lsp_session(_hover((tmp_path / "pipe.res").as_uri())), timeout=20)
    assert result.returncode == 0
    assert '"id": 99' in result.stdout  # it answered the shutdown


def test_lsp_request_about_an_unopened_missing_file_is_answered_without_a_traceback(tmp_path: Path) -> None:
    result = _cli("lsp", cwd=tmp_path, stdin=_lsp_session(_hover((tmp_path / "absent.res").as_uri())))
    assert result.returncode == 0
    assert '"id": 2, "jsonrpc": "2.0", "result": null' in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_lsp_header_claiming_a_huge_message_does_not_exhaust_memory(tmp_path: Path) -> None:
    result = _cli("lsp", cwd=tmp_path, stdin=b"Content-Length: 99999999999999\r\n\r\n{}")
    assert result.returncode == 0 and "out of memory" not in result.stderr


def test_lsp_message_that_is_not_json_is_logged_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = _cli("lsp", cwd=tmp_path, stdin=_lsp_session(b'{"a":'))
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 1


TINY = "network tiny {\n  input 1x8x8\n  stem {\n    conv 3x3, 4\n  }\n  head {\n    avgpool\n    flatten\n" \
       "    linear 2\n  }\n}\n"


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_to_torch_refuses_a_seed_the_cli_refuses_by_name(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        resdsl.compile(TINY).to_torch(seed=seed)  # type: ignore[arg-type]


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_build_refuses_a_seed_the_cli_refuses_as_a_usage_error(seed: object, tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="seed"):
        resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", seed=seed)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
@pytest.mark.parametrize("seed", [1.5, 2**70], ids=["float", "over_int64"])
def test_train_refuses_a_seed_the_cli_refuses_before_making_the_run(seed: object, tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="seed"):
        resdsl.train(TINY, out=tmp_path / "run", data=tmp_path, seed=seed,  # type: ignore[arg-type]
                     settings={"dataset": "fashion-mnist", "iterations": 1})
    assert not (tmp_path / "run").exists()


def test_compile_of_an_empty_string_does_not_read_the_current_folder() -> None:
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile("")
    assert "directory" not in str(caught.value)


def test_check_reads_a_spec_file_whose_name_holds_a_brace(tmp_path: Path) -> None:
    (tmp_path / "net{v2}.res").write_text(CANONICAL)
    result = _cli("check", "net{v2}.res", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "net{v2}.res: ok (n, 0 params, 0.000 GMACs)\n"), result.stderr


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_train_stopped_by_sigterm_keeps_its_progress_as_ctrl_c_does(tmp_path: Path) -> None:
    """A scheduler's preemption (Slurm, Kubernetes, systemd) is SIGTERM: the run should checkpoint as on Ctrl-C,
    not lose every iteration since the last --checkpoint-every."""
    (tmp_path / "tiny.res").write_text(TINY.replace("1x8x8", "1x28x28").replace("linear 2", "linear 10"))
    run = subprocess.Popen([sys.executable, "-m", "resdsl", "train", "tiny.res", "--dataset", "fashion-mnist",
                            "--data", str(FASHION), "--out", "run", "--batch", "4", "--iterations", "1000000",
                            "--checkpoint-every", "1000000", "--eval-every", "1000000", "--log-every", "1"],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None and (
            not metrics.exists() or metrics.read_text().count("\n") < 3):
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode != 0
    assert (tmp_path / "run" / "last.pt").is_file(), stderr


def test_bench_of_one_route_that_cannot_run_here_fails_even_with_the_comparison(tmp_path: Path) -> None:
    """TensorRT on the CPU cannot run: the route asked for is missing, so the command fails (exit 1) with the
    reason, as it does with --no-compare, instead of printing the other routes and exiting 0."""
    (tmp_path / "tiny.res").write_text(TINY)
    result = _cli("bench", "tiny.res", "--backend", "tensorrt", "--device", "cpu", "--runs", "2", "--warmup", "0",
                  cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_caret_sits_under_the_error_after_wide_characters_on_the_line(tmp_path: Path) -> None:
    """A terminal shows each CJK character two cells wide: the caret must move by the cells, not the characters."""
    prefix = '  stem { relu; x = "日本語"; '
    (tmp_path / "wide.res").write_text(f"network a {{\n  input 3x32x32\n{prefix}bogus 3 }}\n}}\n")
    result = _cli("check", "wide.res", cwd=tmp_path)
    quote, caret = result.stderr.splitlines()[1:3]
    assert quote == f"  {prefix}bogus 3 }}"
    assert caret == " " * (2 + len(prefix) + 3) + "^~~~~"  # 3 characters of two cells each before it


def test_lsp_diagnostic_after_an_emoji_is_placed_in_the_utf16_units_the_server_announces(tmp_path: Path) -> None:
    """The server announces positionEncoding utf-16, in which an emoji is two units: the range must count so."""
    line = '  stem { relu; x = "😀😀"; bogus 3 }'
    text = f"network a {{\n  input 3x32x32\n{line}\n}}\n"
    uri = (tmp_path / "emoji.res").as_uri()
    opened = {"jsonrpc": "2.0", "method": "textDocument/didOpen",
              "params": {"textDocument": {"uri": uri, "languageId": "resdsl", "version": 1, "text": text}}}
    result = _cli("lsp", cwd=tmp_path, stdin=_lsp_session(opened))
    bodies = re.split(r"Content-Length: \d+\r\n(?:.+\r\n)*\r\n", result.stdout)  # the headers between them
    published = [json.loads(body) for body in bodies if body]
    diagnostics = next(message["params"]["diagnostics"] for message in published
                       if message.get("method") == "textDocument/publishDiagnostics")
    start = len(line[:line.index("bogus")].encode("utf-16-le")) // 2  # 27: two emoji of two units each
    assert diagnostics[0]["range"]["start"] == {"line": 2, "character": start}


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
    result = _cli(command, "deep.res", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("deep.res:") and "internal error" not in result.stderr


def test_ifs_nested_a_few_deep_still_check() -> None:
    assert resdsl.compile(_nested_ifs(8, chained=False)).params == 0
    assert resdsl.compile(_nested_ifs(8, chained=True)).params == 0


def test_blocks_calling_blocks_at_the_limit_each_nesting_ifs_at_the_limit_check() -> None:
    """The two limits together are what the recursive passes must take: 31 blocks deep, 16 ifs deep in each."""
    blocks = [f"block b{k}(width) {{\n" + "if true {\n" * 16 + (f"b{k + 1} width" if k < 30 else "relu") + "\n"
              + "}\n" * 16 + "}" for k in range(31)]
    network = "network a {\n  input 3x32x32\n  stem { conv 3x3, 4 }\n  stages { s: 1 x 4, block: b0 }\n}"
    assert resdsl.compile("\n".join([*blocks, network]) + "\n").params == 108  # conv 3x3x3x4, no bias


def test_lsp_request_with_params_of_the_wrong_shape_is_logged_without_a_traceback(tmp_path: Path) -> None:
    hover = {"jsonrpc": "2.0", "id": 2, "method": "textDocument/hover", "params": None}
    result = _cli("lsp", cwd=tmp_path, stdin=_lsp_session(hover))
    assert result.returncode == 0 and '"id": 99' in result.stdout
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2


def test_set_of_one_param_twice_is_a_usage_error_as_in_extends(tmp_path: Path) -> None:
    """`extends "x" (n = 3, n = 4)` is refused; `--set n=3 --set n=4` should not silently take the last."""
    result = _cli("check", "cifar20", "--set", "n=3", "--set", "n=4", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --set n ") and "twice" in result.stderr


@pytest.mark.torch
def test_train_to_an_empty_out_is_refused_not_run_in_the_current_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out ""` is a usage error; `out=""` was Path(""), the current folder, which filled with a run."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(resdsl.UsageError, match="out"):
        resdsl.train(TINY, out="", data=tmp_path, settings={"dataset": "fashion-mnist", "iterations": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
@pytest.mark.parametrize(("argument", "value"), [("batch", 1.5), ("batch", (1, 2)), ("mean", "0.5"),
                                                 ("features", "stem")],
                         ids=["float_batch", "pair_batch", "string_mean", "string_features"])
def test_build_names_an_argument_of_the_wrong_type(argument: str, value: object, tmp_path: Path) -> None:
    """Not "cannot unpack non-iterable float object", or `features="stem"` read as the names 's', 't', ..."""
    with pytest.raises(resdsl.UsageError, match=argument) as caught:
        wrong: dict[str, Any] = {argument: value}
        resdsl.build(TINY, backend="pytorch", output=tmp_path / "tiny.pt2", **wrong)
    assert "'s'" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_train_refuses_a_negative_number_of_workers_as_the_cli_does(tmp_path: Path) -> None:
    with pytest.raises(resdsl.UsageError, match="workers"):
        resdsl.train(TINY, out=tmp_path / "run", data=tmp_path, workers=-1,
                     settings={"dataset": "fashion-mnist", "iterations": 1})
    assert not (tmp_path / "run").exists()


def test_fmt_of_an_endless_stdin_stops_at_the_size_limit(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run([sys.executable, "-m", "resdsl", "fmt", "-"], cwd=tmp_path, stdin=endless,
                              capture_output=True, timeout=30, preexec_fn=lambda: resource.setrlimit(
                                  resource.RLIMIT_AS, (1 << 30, 1 << 30)))
    assert done.returncode == 1 and b"over the limit" in done.stderr and done.stdout == b""


def test_fmt_of_stdin_that_is_not_utf8_says_so_as_for_a_file(tmp_path: Path) -> None:
    result = _cli("fmt", "-", cwd=tmp_path, stdin=b"network n {\n  input 3x32x32 \xff\n}\n")
    assert result.returncode == 1
    assert "not UTF-8" in result.stderr and "\\udc" not in result.stderr


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
