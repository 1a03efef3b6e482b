"""Adversarial review (bad input and edges): each test is one bug found, failing on the code it was found in."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

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
