"""The JSON sidecars `resdsl build` writes beside its artifacts (OUT.json) are ignored by git, as the artifacts are;
the README's own outputs are checked in tests/test_readme.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("artifact", ["c20.pt2", "r50.pt", "r152.engine", "demo-out/cifar20.pt2"])
def test_an_artifact_and_its_sidecar_are_ignored(artifact):
    assert _ignored(artifact) and _ignored(f"{artifact}.json")


@pytest.mark.parametrize("path", ["docs/img/resnet34_block.svg", "docs/img/new_figure.png", "specs/timm/notes.json"])
def test_committed_figures_and_json_below_the_root_are_not_ignored(path):
    assert not _ignored(path)
