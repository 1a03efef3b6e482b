"""A pre-warmed Python that starts `python -m resdsl ARGS` (or `python -c SCRIPT ARGS`) by forking.

Why: the CLI tests ran each command as a fresh interpreter, which imported torch, torchvision and resdsl again
(2 CPU seconds on a quiet 2-core machine, 5 under load) to do a fraction of that work. A zygote imports them
once per pytest worker; each command is a fork of it that starts in milliseconds.

A forked command is what a fresh one is as far as the tests can tell: its own pid, session and process group,
the given cwd, environment and argv, stdin from /dev/null, stdout and stderr captured apart, its exit status or
signal, and its own CPU seconds. What it cannot be:
- its peak RSS includes the zygote's pages, so it is not reported (`max_rss_bytes` is None): memory tests and CPU
  bounds that include the start-up run fresh (`tests/measured.py`);
- environment read while Python starts or torch is imported (PYTHON*, OMP_*, locale, ...) would not take effect:
  a call whose environment differs from the zygote's in such a variable runs fresh (`IMPORT_TIME`);
- all commands of a zygote share its hash seed.
What the imports printed on stderr is replayed at the head of each command's stderr, as a fresh one prints it.

How: the pytest side sends a request (JSON) with four descriptors over a socket: a reply socket and the command's
stdin, stdout and stderr. The zygote forks a runner for it, which forks the command; the command makes its own
session, takes its descriptors, cwd and environment, and returns to the bottom of this file, which runs the code
as `__main__` and lets the interpreter end as usual. The runner reports the command's pid once it has its session,
then its wait status and CPU seconds. The zygote never runs a torch op (OpenMP's pool is not fork-safe once
started), checks it has one thread before serving, and ends when its socket closes (the session ended or the
pytest worker died) and its running commands have ended.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from measured import Finished, run_measured

MAX_REQUEST = 1 << 20  # bytes: a request is a few KB (the environment and a script)
START_TIMEOUT = 300  # seconds to import the preloaded modules, on a loaded machine
# Variables read when Python starts or torch, OpenMP, CUDA or a C library loads: changing one needs a fresh process.
IMPORT_TIME = re.compile(r"PYTHON|OMP_|GOMP_|KMP_|MKL_|OPENBLAS_|TORCH|PYTORCH|CUDA|NVIDIA|LD_|MALLOC|LC_|LANG$")


class ZygoteError(RuntimeError):
    """The zygote died, hung, or could not start a command."""


def child_environment(env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a command: this process's, one OpenMP thread (as run_measured gives), and `env`."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}


class Command:
    """A forked command, used as a `subprocess.Popen(..., text=True)` of it is: pid, poll, wait, communicate,
    send_signal, kill; and `cpu_seconds` once it ended."""

    def __init__(self, args: list[str], pid: int, reply: socket.socket, stdout: int, stderr: int, replay: str):
        self.args, self.pid, self.returncode, self.cpu_seconds = args, pid, None, None
        self._reply, self._outputs = reply, {stdout: [], stderr: []}
        self._stdout, self._stderr, self._replay = stdout, stderr, replay
        self._open = {reply.fileno(), stdout, stderr}

    def _ended(self) -> None:
        message = self._reply.recv(MAX_REQUEST)
        if not message:
            raise ZygoteError(f"the zygote's runner of pid {self.pid} ended without reporting how the command ended")
        status, self.cpu_seconds = json.loads(message)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._open.discard(self._reply.fileno())
        self._reply.close()

    def _pump(self, timeout: float | None, pipes: bool) -> None:
        """Read output (if `pipes`) and the end report until they are all closed; TimeoutExpired after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in self._open:
                if pipes or fd not in self._outputs:
                    selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                events = selector.select(None if deadline is None else max(0, deadline - time.monotonic()))
                if not events and deadline is not None and time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in events:
                    selector.unregister(key.fd)
                    if key.fd not in self._outputs:
                        self._ended()
                    elif data := os.read(key.fd, 1 << 16):
                        self._outputs[key.fd].append(data)
                        selector.register(key.fd, selectors.EVENT_READ)
                    else:
                        os.close(key.fd)
                        self._open.discard(key.fd)

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._pump(timeout, pipes=False)
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Stdout and stderr to their ends, and the exit status; as Popen's, a timeout leaves the command running."""
        self._pump(timeout, pipes=True)
        out, err = (b"".join(self._outputs[fd]).decode(errors="replace") for fd in (self._stdout, self._stderr))
        return out, self._replay + err

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def kill_group(self) -> None:
        """SIGKILL to the command and every process of its group (those it started)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)


class Zygote:
    """Commands forked from one pre-warmed Python that imported `preload`; started at the first command,
    ended by `close()`."""

    def __init__(self, preload: list[str], env: dict[str, str] | None = None, start_timeout: float = START_TIMEOUT):
        self.preload, self.env, self.start_timeout = preload, env, start_timeout
        self.process: subprocess.Popen | None = None

    def _start(self) -> None:
        self.env = self.env if self.env is not None else child_environment(None)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # the zygote's stderr, open as long as it runs: what its imports print, and why it died
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, __file__, str(theirs.fileno()), *self.preload],
                                        pass_fds=[theirs.fileno()], env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        theirs.close()
        self.control = ours
        self.control.settimeout(self.start_timeout)
        try:
            ready = self.control.recv(16)
        except TimeoutError:
            ready = b""
        if ready != b"ready":
            self.process.kill()
            self.process.wait()
            error = ZygoteError(f"the zygote did not start within {self.start_timeout} s: {self._log()}")
            self.close()
            raise error
        self.replay = self._log()
        self.control.settimeout(None)

    def _log(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def needs_fresh(self, environment: dict[str, str]) -> bool:
        """Whether `environment` differs from the zygote's in a variable read at start-up (see IMPORT_TIME)."""
        zygote = self.env if self.env is not None else child_environment(None)
        changed = {name for name in environment.keys() | zygote.keys() if environment.get(name) != zygote.get(name)}
        return any(IMPORT_TIME.match(name) for name in changed)

    def start(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, script: str | None = None,
              module: str = "resdsl", timeout: float = 120) -> Command | subprocess.Popen:
        """`python -m module ARGS` (or `python -c script ARGS`) in `cwd`, forked from the zygote, or fresh where
        `env` needs it; in its own session, stdin from /dev/null. `timeout`: for the zygote to answer."""
        environment = child_environment(env)
        entry = ["-c", script] if script is not None else ["-m", module]
        if self.needs_fresh(environment):
            return subprocess.Popen([sys.executable, *entry, *args], cwd=cwd, env=environment, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        if not Path(cwd).is_dir():  # as Popen would, in the caller
            raise FileNotFoundError(2, "No such directory", str(cwd))
        if self.process is None:
            self._start()
        request = json.dumps({"args": args, "cwd": str(cwd), "env": environment, "script": script,
                              "module": module}).encode()
        reply, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stdout, stdout_theirs = os.pipe()
        stderr, stderr_theirs = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        given = [theirs.fileno(), stdin, stdout_theirs, stderr_theirs]
        try:
            socket.send_fds(self.control, [request], given)
            reply.settimeout(timeout)
            started = reply.recv(MAX_REQUEST)
        except (OSError, TimeoutError) as error:
            raise ZygoteError(f"the zygote (exit status {self.process.poll()}) did not start "
                              f"{[*entry, *args]}: {error!r}; {self._log()}") from error
        finally:
            theirs.close()
            for fd in given[1:]:
                os.close(fd)
        if not started:
            raise ZygoteError(f"the zygote's runner ended before starting {[*entry, *args]}: {self._log()}")
        reply.settimeout(None)
        return Command([sys.executable, *entry, *args], json.loads(started), reply, stdout, stderr, self.replay)

    def run(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, script: str | None = None,
            timeout: float = 180, fresh: bool = False) -> Finished:
        """`start` to the end, as run_measured: the group is killed past `timeout` (TimeoutExpired); no peak RSS.
        `fresh` (or an `env` that needs it): a fresh interpreter, its start-up and peak RSS measured too."""
        if fresh or self.needs_fresh(child_environment(env)):
            entry = ["-c", script] if script is not None else ["-m", "resdsl"]
            return run_measured([sys.executable, *entry, *args], cwd, env, timeout)
        if self.process is None:
            self._start()
        began = time.monotonic()
        command = self.start(args, cwd, env, script)
        assert isinstance(command, Command)
        try:
            stdout, stderr = command.communicate(timeout)
        except subprocess.TimeoutExpired:
            command.kill_group()
            command.communicate(60)  # the runner reports the kill at once; if not, the zygote is broken
            raise
        assert command.returncode is not None and command.cpu_seconds is not None
        return Finished(command.returncode, stdout, stderr, time.monotonic() - began, command.cpu_seconds, None)

    def close(self) -> None:
        """End the zygote (it exits when its socket closes) and wait for it."""
        if self.process is None:
            return
        self.control.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.process = None

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the zygote process ---------------------------------------------------------------------------------------


def _serve(control: socket.socket) -> dict:
    """Fork a runner for each request until the socket closes; returns only in a forked command, its request.

    The zygote reaps its runners, and they their commands, so that the commands' CPU time counts in pytest's
    children's, as a fresh process's does; at the end it waits for the runners still running."""
    while True:
        message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 4)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, 0 if not message else os.WNOHANG)[0]:
                pass
        if not message:
            os._exit(0)
        if os.fork() == 0:
            control.close()
            try:
                _fork_command(*fds, json.loads(message)["env"])
            except BaseException:  # the runner must never go back to serving
                os._exit(70)
            return json.loads(message)  # in the command
        for fd in fds:
            os.close(fd)


def _fork_command(reply: int, stdin: int, stdout: int, stderr: int, env: dict[str, str]) -> None:
    """In a runner: fork the command and return in it, set up; in the runner, report its pid, then its end."""
    ready, ready_theirs = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for target, fd in enumerate((stdin, stdout, stderr)):
                os.dup2(fd, target)
            for fd in (reply, stdin, stdout, stderr, ready):
                os.close(fd)
            os.environ.clear()
            os.environ.update(env)
            os.close(ready_theirs)  # the runner reads its end of file: the command has its session
            return
        except BaseException:
            os._exit(71)
    for fd in (stdin, stdout, stderr, ready_theirs):
        os.close(fd)
    os.read(ready, 1)
    answer = socket.socket(fileno=reply)
    try:
        answer.send(json.dumps(pid).encode())
    except OSError:  # the pytest side is gone
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    try:
        answer.send(json.dumps([status, usage.ru_utime + usage.ru_stime]).encode())
    finally:
        os._exit(0)


def _run(request: dict) -> None:
    """In the command: run its code as `python -m module` or `python -c script` runs it."""
    import runpy
    import types

    os.chdir(request["cwd"])
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh process seeds numpy's global generator from the OS
    tempfile.tempdir = None  # found again from this environment's TMPDIR
    if request["script"] is None:
        sys.argv, sys.path[0] = ["-m", *request["args"]], os.getcwd()
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = ["-c", *request["args"]], ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(request["script"], "<string>", "exec"), vars(main))


if __name__ == "__main__":
    _control = socket.socket(fileno=int(sys.argv[1]))
    for _name in sys.argv[2:]:
        importlib.import_module(_name)
    if len(os.listdir("/proc/self/task")) > 1:
        sys.exit(f"the zygote has {len(os.listdir('/proc/self/task'))} threads after importing {sys.argv[2:]}; "
                 "forking it would copy one of them only")
    # the objects imported so far are never collected: a command's collections (and its interpreter's end) would
    # otherwise write to, and so copy, every page of them (1.4 CPU seconds instead of 0.4 per command)
    gc.freeze()
    sys.stdout.flush()
    _control.send(b"ready")
    _request = _serve(_control)
    try:
        _run(_request)
    except KeyboardInterrupt:  # a fresh interpreter prints it, finalises, and ends by SIGINT (exit status -2)
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
