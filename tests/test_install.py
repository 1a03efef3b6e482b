"""What `pip install resdsl` (no extras) gives: the wheel built from this checkout, run from `/` with every
optional package hidden. The front-end commands work; the others say which extra to install, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the extras install (top-level modules): hidden, an import of one fails as if it were not installed.
OPTIONAL = ("torch", "numpy", "PIL", "matplotlib", "onnx", "onnxscript", "onnxruntime", "torch_tensorrt",
            "tensorrt", "tensorboard", "torchvision", "timm")

WITHOUT_OPTIONAL = f"""
import importlib.abc, sys

class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hidden())
"""
CLI = WITHOUT_OPTIONAL + 'sys.argv[0] = "resdsl"\nfrom resdsl.cli.app import main\nmain()\n'


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The wheel of this checkout built by setuptools in `root/dist`, and what the build printed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in ("resdsl", "grammars", "specs", "backends"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_wheel(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", build, str(root / "dist")], cwd=source, capture_output=True,
                           text=True, check=True)
    return root, built


@pytest.fixture(scope="module")
def site(wheel_build: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    """The wheel of this checkout, unpacked as pip installs a pure-Python wheel."""
    root, built = wheel_build
    with zipfile.ZipFile(root / "dist" / built.stdout.split()[-1]) as wheel:
        wheel.extractall(root / "site")
    return root / "site"


def test_building_the_package_prints_no_deprecation_warning(wheel_build):
    # setuptools >= 77 prints a boxed SetuptoolsDeprecationWarning for `license = { text = ... }`
    assert "DeprecationWarning" not in wheel_build[1].stderr


def _python(site: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` from `/` with the unpacked wheel first on the path (ahead of this checkout's editable install)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RESDSL_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=120)


def _version(site: Path) -> str:
    (metadata,) = site.glob("resdsl-*.dist-info/METADATA")
    return next(line.split(": ", 1)[1] for line in metadata.read_text().splitlines() if line.startswith("Version: "))


def test_the_wheel_holds_the_grammar_prelude_and_every_spec(site):
    shipped = {p.relative_to(site / "resdsl" / "specs") for p in (site / "resdsl" / "specs").rglob("*.res")}
    assert shipped == {p.relative_to(ROOT / "specs") for p in (ROOT / "specs").rglob("*.res")}
    assert (site / "resdsl" / "grammars" / "resdsl.lark").is_file()
    assert (site / "resdsl" / "grammars" / "prelude.res").is_file()


def test_the_wheel_holds_every_python_module_of_the_checkout(site):
    # setuptools' `packages` list is written by hand: a new subpackage missing from it is missing from the wheel
    def modules(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*.py")}

    assert modules(ROOT / "resdsl") <= modules(site / "resdsl")
    assert modules(ROOT / "backends") == modules(site / "resdsl" / "backends")


def test_the_wheel_marks_the_package_typed(site):
    # PEP 561: without py.typed, type checkers ignore an installed package's annotations
    assert (site / "resdsl" / "py.typed").is_file()


def test_python_api_runs_from_the_wheel_without_optional_packages(site):
    code = WITHOUT_OPTIONAL + (
        "import resdsl\n"
        "network = resdsl.compile(resdsl.zoo.find('torchvision/resnet18'))\n"
        "print(resdsl.__file__, network.params, 'torch' in sys.modules)\n")
    result = _python(site, code)
    assert result.returncode == 0, result.stderr
    path, params, torch_loaded = result.stdout.split()
    assert Path(path).is_relative_to(site)
    assert int(params) == 11_689_512  # torchvision's resnet18
    assert torch_loaded == "False"


@pytest.mark.parametrize("args, expected", [
    (["--version"], "resdsl {version}"),
    (["check", "resnet50"], "resnet50: ok (resnet50, 25,557,032 params"),
    (["info", "torchvision/resnet50", "--json"], '"params": 25557032'),
    (["zoo"], "torchvision/resnext50_32x4d"),
], ids=["version", "check", "info", "zoo"])
def test_front_end_commands_run_without_optional_packages(site, args, expected):
    result = _python(site, CLI, *args)
    assert result.returncode == 0, result.stderr
    assert expected.format(version=_version(site)) in result.stdout


def test_viz_runs_without_optional_packages(site, tmp_path):
    result = _python(site, CLI, "viz", "cifar20", "-o", str(tmp_path / "cifar20.svg"))
    assert result.returncode == 0, result.stderr
    assert "<svg" in (tmp_path / "cifar20.svg").read_text()


@pytest.mark.parametrize("args, line", [
    (["build", "cifar20", "--backend", "pytorch", "-o", "{tmp}/c.pt2"],
     "resdsl build needs torch: pip install 'resdsl[torch]'"),
    (["build", "cifar20", "--backend", "onnx", "-o", "{tmp}/c.onnx"],
     "resdsl build needs torch: pip install 'resdsl[onnx]'"),
    (["bench", "cifar20"], "resdsl bench needs torch: pip install 'resdsl[torch]'"),
    (["train", "cifar20", "--data", "{tmp}", "--iterations", "1"],
     "resdsl train needs torch: pip install 'resdsl[train]'"),
    (["eval", "cifar20", "--weights", "{tmp}/w.pt"], "resdsl eval needs torch: pip install 'resdsl[train]'"),
    (["plot", "{tmp}"], "resdsl plot needs matplotlib: pip install 'resdsl[plot]'"),
], ids=["build", "build-onnx", "bench", "train", "eval", "plot"])
def test_commands_without_their_extra_name_it_in_one_line(site, tmp_path, args, line):
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 1, "train_error": 0.5}) + "\n")
    result = _python(site, CLI, *(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {line}"]
    assert not list(tmp_path.glob("c.*"))
