"""Fixtures shared by the tests: a tiny training workspace, the CLI in a measured process (forked from a zygote
that imported torch once), a read-only folder, image folders in ImageNet's layout, and a run killed right after a
checkpoint. Hooks: slow tests run only when -m names `slow`; a test that imports torch must carry the `torch` marker
(so `-m "not torch"` runs without torch)."""

from __future__ import annotations

import ast
import os
import pickle
import re
import resource
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression
from measured import Finished
from zygote import Zygote, child_environment

REPO = Path(__file__).resolve().parent.parent

# One thread per pytest-xdist worker (set before any test imports torch, and inherited by the CLI subprocesses):
# with -n 2 on 2 cores, two workers of 2 threads each oversubscribe the cores and wait on each other.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
SPECS = REPO / "specs"

TINY_SPEC = """\
network tiny {
  input 1x12x12
  stem { conv1: conv 3x3, 8; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 1 x 8
    layer2: 1 x 16, stride 2
  }
  head { avgpool; fc: linear 10 }
  train {
    dataset mnist
    split 32
    batch 32
    lr 0.05
    momentum 0.9
    weight_decay 5e-4
    schedule steps(6: 0.1)
    iterations 12
    augment pad 2, crop 12, flip
    mean_subtract
  }
}
"""


# What a test marked `torch` may import and an unmarked one may not: torch, the oracles built on it, and the
# packages of the extras that need it. The front end, viz, fmt, lsp and the CLI's torch-free commands need none.
TORCH_STACK = ("torch", "torchvision", "timm", "numpy", "onnx", "onnxruntime", "openvino")


def _torch_stack_imported() -> set[str]:
    return {name for name in TORCH_STACK if name in sys.modules}


def _selected(config: pytest.Config, markers: set[str]) -> bool:
    """Whether `-m` selects a test carrying exactly `markers`."""
    expression = config.option.markexpr
    return not expression or Expression.compile(expression).evaluate(lambda name, **_: name in markers)


def _module_markers(path: Path) -> set[str]:
    """The marker names of a test module's `pytestmark`, read without importing the module."""
    for statement in ast.parse(path.read_text(), str(path)).body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "pytestmark"
                                                      for t in statement.targets):
            return {node.attr for node in ast.walk(statement.value) if isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"}
    return set()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A module marked `torch` as a whole is not even imported when `-m` deselects it (it imports torch at the top)."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        markers = _module_markers(collection_path)
        if "torch" in markers and not _selected(config, markers):
            return True
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """Collecting an unmarked module that imports torch at its top fails, naming the module."""
    before = _torch_stack_imported()
    report = yield
    imported = _torch_stack_imported() - before
    if imported and isinstance(collector, pytest.Module) and "torch" not in _module_markers(collector.path):
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid} imports {', '.join(sorted(imported))} but has no "
                           "`pytestmark = pytest.mark.torch`")
    return report


def pytest_configure(config: pytest.Config) -> None:
    """`--dist loadgroup` with a pytest whose node ids pytest-xdist cannot suffix with a test's group is a usage
    error: the groups' tests would spread over the workers, each making the group's fixtures again (silently)."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    from importlib.metadata import version

    def release(package: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version(package))[:2])

    if release("pytest") >= (9, 2) and release("pytest-xdist") <= (3, 8):
        raise pytest.UsageError(f"pytest {version('pytest')} keeps node ids that pytest-xdist "
                                f"{version('pytest-xdist')} needs to change to group tests (xdist_group): install "
                                "the versions pyproject.toml's dev extra asks for")


# The longest modules (a minute of CPU or more each; test_limits is the torch-free subset's): started first, so
# that no worker of -n 2 ends the run alone.
RUN_FIRST = ("test_train_fashion.py", "test_imagenet.py", "test_fig6.py", "test_train.py", "test_limits.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests (minutes on a 2-core CPU) run only when -m names `slow`, e.g. -m slow or -m "slow and not torch";
    the RUN_FIRST modules come first."""
    items.sort(key=lambda item: item.path.name not in RUN_FIRST)
    if re.search(r"\bslow\b", config.option.markexpr):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


_BEFORE = pytest.StashKey[set[str]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_BEFORE] = _torch_stack_imported()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A test without the `torch` marker that imports torch (in its fixtures, body or teardown) fails, naming what."""
    report = yield
    if call.when == "teardown" and report.passed and not item.get_closest_marker("torch"):
        imported = _torch_stack_imported() - item.stash.get(_BEFORE, set())
        if imported:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} imported {', '.join(sorted(imported))} but has no torch marker"
    return report


# What `resdsl train`, `eval`, `plot` and `check` import before their first step: the zygote imports it once.
PRELOAD = ["torch", "torchvision", "numpy", "resdsl.cli.app", "resdsl.cli.train", "resdsl.cli.eval", "resdsl.cli.plot",
           "resdsl.cli.check", "resdsl.train", "resdsl.training", "resdsl.evaluation", "resdsl.deploy"]


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    """This worker's zygote (tests/zygote.py): `python -m resdsl` commands forked from a process that imported
    PRELOAD, started at the first command and ended with the session."""
    with Zygote(PRELOAD, child_environment(None)) as forks:
        yield forks


@pytest.fixture(scope="session")
def resdsl_cli(zygote: Zygote):
    """`resdsl_cli(*args, cwd=..., env=..., script=..., fresh=False)`: the CLI (or a Python script run as
    `python -c script ARGS`) as a measured process, forked from the zygote; `fresh=True` for a fresh interpreter,
    whose CPU seconds include its start-up and whose peak RSS is its own."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None, script: str | None = None,
            timeout: float = 180, fresh: bool = False) -> Finished:
        return zygote.run(list(args), cwd, env, script, timeout, fresh)

    return run


def modules_imported_by(code: str, modules: tuple[str, ...]) -> tuple[str, list[str]]:
    """Run Python `code` in a fresh interpreter (it must succeed): its stdout, and which of `modules` it imported."""
    probe = f"\nimport sys\nprint(sorted(m for m in {modules!r} if m in sys.modules), file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, check=True)
    return done.stdout, ast.literal_eval(done.stderr.strip().splitlines()[-1])


def modules_a_command_imports(args: list[str], modules: tuple[str, ...]) -> tuple[str, list[str]]:
    """Run `resdsl ARGS` in a fresh interpreter (it must succeed): its stdout, and which of `modules` it imported."""
    code = ("from resdsl.cli.app import app\n"
            f"try:\n    app({args!r}, prog_name='resdsl')\n"
            "except SystemExit as done:\n    assert not done.code, done.code")
    return modules_imported_by(code, modules)


def run_resdsl(*args: str, cwd: Path, stdin: str | bytes | None = None, memory: int | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m resdsl ARGS` in a fresh interpreter, its address space capped at `memory` bytes if given."""

    def cap() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run([sys.executable, "-m", "resdsl", *args], cwd=cwd, input=data, capture_output=True,
                          timeout=timeout, preexec_fn=cap)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def write_idx(path: Path, array) -> None:
    """An idx file (the MNIST format) of unsigned bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.numpy().astype("uint8").tobytes())


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> Path:
    """tiny.res and an idx dataset `data/` (256 train, 64 test images of 12x12) whose class is a bright row."""
    import torch

    root = tmp_path_factory.mktemp("train")
    (root / "tiny.res").write_text(TINY_SPEC)
    data = root / "data"
    data.mkdir()
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", 256), ("t10k", 64)):
        labels = torch.randint(10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 12, 12), generator=generator)
        images[torch.arange(count), labels + 1] = 250
        write_idx(data / f"{prefix}-images-idx3-ubyte", images)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_cifar(folder: Path, classes: int, train: int, test: int, seed: int = 0) -> Path:
    """Random images in the CIFAR-10 (`classes` 10) or CIFAR-100 python layout under `folder`; returns `folder`."""
    import numpy as np

    generator = np.random.default_rng(seed)
    label_key = b"labels" if classes == 10 else b"fine_labels"
    names = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if classes == 10 else ["train", "test"])
    counts = [-(-train // 5)] * 5 + [test] if classes == 10 else [train, test]
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(names, counts, strict=True):
        batch = {b"data": generator.integers(0, 256, (count, 3072), dtype=np.uint8),
                 label_key: generator.integers(0, classes, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


@pytest.fixture(scope="session")
def make_cifar():
    """`make_cifar(folder, classes, train, test)`: random CIFAR-10/100 python batches (see write_cifar)."""
    return write_cifar


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder nobody may write into: a read-only tmpfs for root (who ignores modes), mode 0555 for others."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


CLASSES = 10


def write_image_folder(root: Path, per_class: dict[str, int], suffix: str = ".JPEG", seed: int = 0) -> Path:
    """An ImageNet-layout folder (split/<wnid>/<n>.JPEG) of small images whose colour says their class.

    Sizes vary (40 to 120 pixels a side, portrait and landscape) as ImageNet's do.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label in range(CLASSES):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                height, width = (int(v) for v in rng.integers(40, 121, 2))
                pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
                pixels[..., label % 3] += np.uint8(40 + 10 * label)
                # ramps across and down, so that crops and mirror images differ
                pixels[..., 0] += np.linspace(0, 80, width, dtype=np.uint8)[None, :]
                pixels[..., 1] += np.linspace(0, 60, height, dtype=np.uint8)[:, None]
                Image.fromarray(pixels).save(folder / f"{number}{suffix}")
    return root


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """`write_image_folder` into this test's temporary directory."""
    return lambda per_class, suffix=".JPEG": write_image_folder(tmp_path / "images", per_class, suffix)


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 training and 40 validation JPEGs in 10 classes."""
    return write_image_folder(tmp_path_factory.mktemp("jpegs"), {"train": 30, "val": 4})


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 training and 20 validation PNGs in 10 classes: lossless, so a test can decode them independently."""
    return write_image_folder(tmp_path_factory.mktemp("pngs"), {"train": 1, "val": 2}, suffix=".png")


@pytest.fixture(scope="session")
def sigkill_after_checkpoint() -> Callable[[int], str]:
    """A `python -c` program for an iteration: `resdsl ...` (its argv) that dies by SIGKILL right after writing
    the checkpoint of that iteration, as a crash or an OOM killer would leave a run."""
    return _KILLED_AFTER.format


_KILLED_AFTER = """
import os, signal, sys
from resdsl.train import checkpoint
from resdsl.cli.app import main
save = checkpoint.save
def save_then_die(path, state):
    save(path, state)
    if state["iteration"] == {}:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
sys.argv[0] = "resdsl"
main()
"""
