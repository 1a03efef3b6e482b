"""The hooks of tests/conftest.py that keep `pytest -m "not torch"` torch-free and compose -m with `slow`, run on
small test modules by a pytest of their own (numpy stands for the torch stack: it imports in a tenth of a second)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
INI = "[pytest]\nmarkers =\n    torch: needs torch\n    slow: minutes\n"
UNMARKED_MODULE_SEES_NO_NUMPY = ("import sys\n\ndef test_numpy_was_not_imported():\n"
                                 "    assert 'numpy' not in sys.modules\n")


def pytest_on(tmp_path: Path, modules: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """pytest with the suite's conftest.py on `modules` (file name: source) in `tmp_path`."""
    for name in ("conftest.py", "measured.py", "zygote.py"):
        shutil.copy(TESTS / name, tmp_path / name)
    (tmp_path / "pytest.ini").write_text(INI)
    for name, source in modules.items():
        (tmp_path / name).write_text(source)
    # no plugin autoloading (xdist, hypothesis, pytest-lsp...): the hooks need none, and the file runs 3x faster
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)


def test_not_torch_leaves_a_module_marked_torch_unimported(tmp_path: Path):
    marked = "import numpy\nimport pytest\n\npytestmark = pytest.mark.torch\n\ndef test_uses_numpy():\n    pass\n"
    done = pytest_on(tmp_path, {"test_marked.py": marked, "test_free.py": UNMARKED_MODULE_SEES_NO_NUMPY},
                     "-m", "not torch")
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout


def test_an_unmarked_test_that_imports_numpy_fails_naming_it(tmp_path: Path):
    importing = "def test_imports_numpy():\n    import numpy  # noqa: F401\n"
    done = pytest_on(tmp_path, {"test_importing.py": importing}, "-m", "not torch")
    assert done.returncode == 1
    assert "test_importing.py::test_imports_numpy imported numpy but has no torch marker" in done.stdout


def test_an_unmarked_module_that_imports_numpy_is_a_collection_error(tmp_path: Path):
    importing = "import numpy  # noqa: F401\n\ndef test_nothing():\n    pass\n"
    done = pytest_on(tmp_path, {"test_importing.py": importing}, "-m", "not torch")
    assert done.returncode == 2
    assert "test_importing.py imports numpy but has no `pytestmark = pytest.mark.torch`" in done.stdout


def test_slow_tests_run_only_when_the_marker_expression_names_slow(tmp_path: Path):
    modules = {"test_slow.py": "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\n"
                               "def test_quick():\n    pass\n"}
    assert "1 passed, 1 deselected" in pytest_on(tmp_path, modules, "-m", "not torch").stdout
    assert "1 passed, 1 deselected" in pytest_on(tmp_path, modules).stdout
    assert "1 passed, 1 deselected" in pytest_on(tmp_path, modules, "-m", "slow").stdout
    assert "2 passed" in pytest_on(tmp_path, modules, "-m", "slow or not slow").stdout
