"""The model zoo: the specs shipped in the package (`resdsl.specs`), found by name.

A zoo name is a spec's path under `specs/` without `.res`: `resnet50`, `torchvision/resnet50`,
`preact/preact164`. The same names work in an editable checkout and in an installed wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

SUFFIX = ".res"
# Where a spec's architecture comes from, by its folder; specs elsewhere transcribe a paper's table.
SOURCES = {"torchvision": "torchvision", "timm": "timm"}
PAPER = "paper"


@dataclass(frozen=True)
class ZooSpec:
    """One shipped spec: its zoo name, file, source (paper, torchvision or timm) and leading comment."""

    name: str
    path: Path
    source: str
    description: str


def root() -> Path:
    """The folder of the shipped specs (`specs/` in a checkout, `resdsl/specs/` when installed)."""
    return Path(str(resources.files("resdsl.specs")))


@cache
def _index() -> dict[str, Path]:
    base = root()
    files = sorted(base.rglob(f"*{SUFFIX}"))
    return {path.relative_to(base).with_suffix("").as_posix(): path for path in files}


def names() -> list[str]:
    """Every zoo name, sorted."""
    return list(_index())


def find(name: str) -> Path | None:
    """The shipped spec file of a zoo name (`resnet50`, `torchvision/resnet50`, `.res` optional), or None."""
    return _index().get(name.removesuffix(SUFFIX))


def nearest(name: str) -> str | None:
    """The zoo name closest to a mistyped one (`resnet5` -> `resnet50`), or None."""
    from difflib import get_close_matches

    close = get_close_matches(name.removesuffix(SUFFIX), names(), n=1, cutoff=0.8)
    return close[0] if close else None


def resolve(spec: str | Path) -> str | Path:
    """What to read for a spec argument: a path that exists (or any Path) as given, else the zoo's file of
    that name, else `spec` unchanged (to be reported as missing)."""
    if isinstance(spec, Path) or Path(spec).exists():
        return spec
    return find(spec) or spec


def specs() -> list[ZooSpec]:
    """Every shipped spec with its source and description, sorted by name."""
    return [ZooSpec(name, path, SOURCES.get(name.rpartition("/")[0], PAPER), _leading_comment(path))
            for name, path in _index().items()]


def _leading_comment(path: Path) -> str:
    """The comment lines at the top of a spec, joined into one line."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(filter(None, lines))
