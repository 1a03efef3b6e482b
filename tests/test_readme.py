"""The README as written: its Python snippets run in order in one namespace (a `# value` comment after an
expression is checked as a doctest's output), its shell commands run in order in a temporary folder, and its
shown `resdsl info` output is what the command prints.

A command is left out only by one of the rules of `reason_not_to_run`, each shown as the skip's reason.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RESDSL = [sys.executable, "-m", "resdsl.cli"] if (ROOT / "resdsl" / "cli" / "__main__.py").exists() else ["resdsl"]


def blocks(language: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README) if kind == language]


def commands() -> list[str]:
    """The README's shell commands, one a line, without their comments."""
    lines = (line.split("  #")[0].strip() for body in blocks("bash") for line in body.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def reason_not_to_run(command: str) -> str | None:
    """Why the test cannot run `command` here, or None: the only rules by which a README command is left out."""
    words = shlex.split(command)
    if words[0] in ("bash", "."):
        return "sets up .venv: this test runs inside the environment it makes"
    if "tensorrt" in words:
        import torch

        if not torch.cuda.is_available():
            return "needs an NVIDIA GPU"
    if "--data" in words:
        data = Path(os.path.expanduser(words[words.index("--data") + 1]))
        if not data.exists():
            return f"needs the dataset's files at {data}"
    fashion = "--dataset" in words and words[words.index("--dataset") + 1] == "fashion-mnist"
    if fashion and not Path("/usr/share/datasets/fashion-mnist").exists():
        return "needs Debian's dataset-fashion-mnist"
    if any(word.endswith(".res") and not (ROOT / word).exists() for word in words):
        return "names the user's own spec file"
    return None


def _trains(command: str) -> bool:
    """Training (and what reads a run it made) takes minutes on a CPU: those commands are marked slow."""
    return command.startswith("resdsl train") or bool(re.search(r"\bruns/", command))


def _marks(command: str) -> list[pytest.MarkDecorator]:
    """slow for training; torch for the commands that need it (check, info, viz, zoo, diff, fmt need none)."""
    if _trains(command):
        return [pytest.mark.slow, pytest.mark.torch]
    return [pytest.mark.torch] if shlex.split(command)[1] in ("build", "bench", "eval") else []


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the tour's outputs, with the checkout's specs/ where the commands look for them."""
    folder = tmp_path_factory.mktemp("tour")
    (folder / "specs").symlink_to(ROOT / "specs")
    return folder


@pytest.mark.parametrize("command", [pytest.param(command, marks=_marks(command)) for command in commands()])
def test_readme_command_succeeds(command, tour):
    if reason := reason_not_to_run(command):
        pytest.skip(reason)
    words = [os.path.expanduser(word) for word in shlex.split(command)]
    assert words[0] == "resdsl"
    done = subprocess.run([*RESDSL, *words[1:]], cwd=tour, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Warning" not in done.stderr, done.stderr  # nothing printed to the user but the command's own words


@pytest.mark.torch
def test_readme_python_snippets_run_in_order():
    namespace: dict[str, object] = {}
    for snippet in blocks("python"):
        for statement in ast.parse(snippet).body:
            code = ast.get_source_segment(snippet, statement) or ""
            if isinstance(statement, ast.Expr):
                value = eval(code, namespace)
                shown = _shown_value(snippet, statement)
                if isinstance(shown, list) and shown[-1:] == [Ellipsis]:  # `[first, ...]`: how the list starts
                    value, shown = list(value)[:len(shown) - 1], shown[:-1]
                if shown is not None:
                    assert value == shown, f"{code}: {value!r}, README says {shown!r}"
            else:
                exec(code, namespace)


def _shown_value(snippet: str, statement: ast.stmt) -> object | None:
    """The value a `# comment` after an expression shows, if it is a Python literal (else None)."""
    line = snippet.splitlines()[(statement.end_lineno or statement.lineno) - 1]
    comment = line.partition("#")[2].strip()
    try:
        return ast.literal_eval(comment)
    except (ValueError, SyntaxError):
        return None


def test_readme_info_output_is_what_info_prints():
    shown = next(body for body in blocks("") if body.startswith("$ resdsl info"))
    command, *lines = shown.splitlines()
    done = subprocess.run([*RESDSL, *shlex.split(command)[2:]], capture_output=True, text=True, check=True)
    printed = done.stdout.splitlines()
    expected = [line for line in lines if line.strip() != "..."]
    assert printed[:len(expected)] == expected


def test_readme_tour_outputs_are_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = [word for command in commands() for word in shlex.split(command)[1:]
               if re.search(r"\.(svg|png|onnx|engine)$", word) or word.startswith("runs/")]
    assert outputs
    ignored = subprocess.run(["git", "check-ignore", *outputs], cwd=ROOT, capture_output=True, text=True).stdout
    assert sorted(ignored.split()) == sorted(outputs)
    committed = subprocess.run(["git", "check-ignore", "docs/img/plain34_block.svg"], cwd=ROOT)
    assert committed.returncode == 1
