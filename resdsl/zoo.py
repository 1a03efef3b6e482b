"""The model zoo: the specs that ship with resdsl, by name (`resnet50`, `torchvision/resnet50`)."""

from __future__ import annotations

from importlib import resources


def zoo_path(name: str) -> str | None:
    """The file of the zoo spec `name`, or None."""
    if not name or name.startswith(("/", ".")) or ".." in name.split("/"):
        return None
    spec = resources.files("resdsl.specs").joinpath(name if name.endswith(".res") else f"{name}.res")
    return str(spec) if spec.is_file() else None
