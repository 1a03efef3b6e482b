"""What the README's commands and demo.sh write is ignored by git; the committed figures in docs/img/ are not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _outputs(text: str) -> list[str]:
    """The paths given to -o/--output/--out in a text's commands."""
    return re.findall(r"(?:-o|--output|--out)[ =]([^\s`)]+)", text)


def _ignored(paths: list[str]) -> set[str]:
    done = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    return set(done.stdout.split())


def test_the_tours_outputs_are_ignored():
    outputs = _outputs((ROOT / "README.md").read_text()) + _outputs((ROOT / "demo.sh").read_text())
    outputs = [f"{path}/metrics.jsonl" if "." not in Path(path).name else path for path in outputs]  # run folders
    sidecars = [f"{path}.json" for path in outputs if path.endswith((".pt", ".pt2", ".engine"))]
    assert {"r34.svg", "f20.png", "r152.engine"} <= set(outputs)
    assert set(outputs + sidecars) - _ignored(outputs + sidecars) == set()


@pytest.mark.parametrize("path", ["docs/img/resnet34_block.svg", "docs/img/new_figure.png", "benchmarks/fig6.png"])
def test_figures_below_the_root_are_not_ignored(path):
    assert _ignored([path]) == set()
