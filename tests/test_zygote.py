"""tests/zygote.py: a command forked from the zygote is, as the tests can tell, what a fresh `python -m` or
`python -c` is; the reference is a fresh interpreter given the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from zygote import Zygote, ZygoteError, child_environment

pytestmark = pytest.mark.torch

# What a command sees of how it was started.
PROBE = """
import ctypes, json, os, sys, tempfile
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(),
                  "variable": os.environ.get("ZYGOTE_PROBE"), "c_variable": libc.getenv(b"ZYGOTE_PROBE").decode(),
                  "stdin": sys.stdin.read(), "own_session": os.getsid(0) == os.getpid(),
                  "own_group": os.getpgid(0) == os.getpid(), "globals_are_main": sys.modules["__main__"].__dict__
                  is globals(), "tmp": tempfile.gettempdir()}))
print("to stderr", file=sys.stderr)
"""


def fresh(entry: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The reference: the command in a fresh interpreter, in its own session, stdin from /dev/null."""
    return subprocess.run([sys.executable, *entry], cwd=cwd, env=child_environment(env), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, start_new_session=True, timeout=120)


@pytest.mark.parametrize("as_module", [True, False], ids=["python -m", "python -c"])
def test_a_forked_command_sees_what_a_fresh_one_sees(zygote: Zygote, tmp_path: Path, as_module: bool) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "tmp").mkdir()
    env = {"ZYGOTE_PROBE": "forty two", "TMPDIR": str(tmp_path / "tmp")}
    args = ["one", "two words"]
    if as_module:
        command = zygote.start(args, tmp_path, env, module="probe")
        reference = fresh(["-m", "probe", *args], tmp_path, env)
    else:
        command = zygote.start(args, tmp_path, env, script=PROBE)
        reference = fresh(["-c", PROBE, *args], tmp_path, env)
    stdout, stderr = command.communicate(60)
    assert (command.returncode, stderr) == (reference.returncode, reference.stderr) == (0, "to stderr\n")
    assert json.loads(stdout) == json.loads(reference.stdout)
    assert json.loads(stdout)["variable"] == "forty two" and json.loads(stdout)["own_session"]


@pytest.mark.parametrize("script", [
    "import sys; sys.exit(3)",
    "raise ValueError('the end')",
    "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(60)",  # uncaught KeyboardInterrupt
], ids=["exit 3", "exception", "SIGKILL", "SIGINT"])
def test_a_forked_command_ends_as_a_fresh_one_does(zygote: Zygote, tmp_path: Path, script: str) -> None:
    finished = zygote.run([], tmp_path, script=script, timeout=60)
    reference = fresh(["-c", script], tmp_path)
    assert finished.returncode == reference.returncode
    assert finished.stderr.splitlines()[-1:] == reference.stderr.splitlines()[-1:]


def test_a_signal_sent_to_a_started_command_reaches_its_handler(zygote: Zygote, tmp_path: Path) -> None:
    script = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
              "open('ready', 'w').close()\ntime.sleep(60)")
    command = zygote.start([], tmp_path, script=script)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    command.send_signal(signal.SIGTERM)
    assert command.wait(60) == 7


def test_the_timeout_kills_the_commands_whole_group(zygote: Zygote, tmp_path: Path) -> None:
    script = ("import subprocess, time\nchild = subprocess.Popen(['sleep', '600'])\n"
              "open('child', 'w').write(str(child.pid))\ntime.sleep(600)")
    with pytest.raises(subprocess.TimeoutExpired):
        zygote.run([], tmp_path, script=script, timeout=5)
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_cpu_seconds_are_the_commands_own_and_peak_rss_is_not_claimed(zygote: Zygote, tmp_path: Path) -> None:
    script = ("import os, time\nwhile time.process_time() < 0.5:\n    pass\nprint(time.process_time(), flush=True)\n"
              "os._exit(0)")  # no interpreter teardown: the CPU seconds are those burnt here
    finished = zygote.run([], tmp_path, script=script)
    burned = float(finished.stdout)
    # the zygote's imports took seconds of CPU: counted, they would far exceed the half-second burnt here
    assert burned <= finished.cpu_seconds < burned + 0.3
    assert finished.max_rss_bytes is None


def test_a_variable_read_at_start_up_makes_the_command_fresh(zygote: Zygote, tmp_path: Path) -> None:
    # Python reads PYTHONPATH as it starts: a fork of the zygote would not find the module
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "hidden.py").write_text("print('found')")
    finished = zygote.run([], tmp_path, env={"PYTHONPATH": str(tmp_path / "elsewhere")}, script="import hidden")
    assert (finished.returncode, finished.stdout) == (0, "found\n")


def test_openmp_threads_are_those_the_environment_asks_for(zygote: Zygote, tmp_path: Path) -> None:
    script = "import torch; print(torch.get_num_threads())"
    assert zygote.run([], tmp_path, script=script).stdout == "1\n"  # child_environment's OMP_NUM_THREADS
    assert zygote.run([], tmp_path, env={"OMP_NUM_THREADS": "2"}, script=script).stdout == \
        fresh(["-c", script], tmp_path, {"OMP_NUM_THREADS": "2"}).stdout


def test_a_forked_command_runs_parallel_torch_ops(zygote: Zygote, tmp_path: Path) -> None:
    script = "import torch; print(float((torch.ones(256, 256) @ torch.ones(256, 256)).sum()))"
    assert zygote.run([], tmp_path, script=script, timeout=60).stdout == f"{256.0 ** 3}\n"


def test_commands_draw_their_own_numpy_seeds(zygote: Zygote, tmp_path: Path) -> None:
    script = "import numpy; print(numpy.random.randint(1 << 62))"
    assert len({zygote.run([], tmp_path, script=script).stdout for _ in range(3)}) == 3


@pytest.fixture
def zygote_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`zygote_of(module, code, **options)`: a zygote that preloads `module` (`code`, written into tmp_path)."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    def make(module: str, code: str, **options: float) -> Zygote:
        (tmp_path / f"{module}.py").write_text(code)
        return Zygote([module], child_environment(None), **options)

    return make


def test_what_the_imports_print_heads_the_commands_stderr(tmp_path: Path, zygote_of) -> None:
    with zygote_of("noisy", "import sys\nprint('noisy: a warning', file=sys.stderr)") as forks:
        finished = forks.run([], tmp_path, script="import noisy, sys; print('mine', file=sys.stderr)")
    reference = fresh(["-c", "import noisy, sys; print('mine', file=sys.stderr)"], tmp_path)
    assert finished.stderr == reference.stderr == "noisy: a warning\nmine\n"


def test_a_zygote_whose_imports_start_a_thread_refuses_to_fork(tmp_path: Path, zygote_of) -> None:
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
    with zygote_of("threads", code) as forks, pytest.raises(ZygoteError, match="2 threads"):
        forks.run([], tmp_path, script="pass")


def test_a_hung_zygote_is_an_error_not_a_hang(tmp_path: Path, zygote_of) -> None:
    with zygote_of("hangs", "import time\ntime.sleep(600)", start_timeout=3) as forks:
        began = time.monotonic()
        with pytest.raises(ZygoteError, match="did not start within 3 s"):
            forks.run([], tmp_path, script="pass")
        assert time.monotonic() - began < 30
        assert forks.process is None


def test_a_dead_zygote_is_an_error(tmp_path: Path, zygote_of) -> None:
    with zygote_of("plain", "") as forks:
        assert forks.run([], tmp_path, script="print('up')").stdout == "up\n"
        assert forks.process is not None
        forks.process.kill()
        forks.process.wait()
        with pytest.raises(ZygoteError, match="did not start"):
            forks.run([], tmp_path, script="pass")


def test_the_zygote_ends_when_its_pytest_process_dies(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("")
    code = ("import os\nfrom pathlib import Path\nfrom zygote import Zygote\nforks = Zygote(['plain'])\n"
            "forks.run([], Path('.'), script='pass')\nprint(forks.process.pid, flush=True)\nos._exit(0)")
    ended = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": f"{Path(__file__).parent}:{tmp_path}"})
    pid = int(ended.stdout)  # the zygote, left running by a process that ended without closing it
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
