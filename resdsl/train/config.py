"""`RunConfig`: how to run a recipe (where, how long between checkpoints, on what device)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from resdsl.recipe import Recipe


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that is not the network or its recipe."""

    recipe: Recipe
    out: Path
    data: Path | None = None
    seed: int = 0
    device: str | None = None
    amp: str | None = None
    compile: bool = False
    sync_bn: bool = False
    zero_init_residual: bool = False
    checkpoint_every: int = 1000
    eval_every: int = 1000
    log_every: int = 50
    limit_train: int | None = None
    limit_eval: int | None = None
    resume: bool = False
    weights: Path | None = None
    strict: bool = False
    tensorboard: bool = False
    workers: int | None = None  # image folders: decoding processes per rank (None: the CPUs per rank)
    decoder: str = "auto"  # image folders: auto, torchvision, pil or nvjpeg
    divergence_check: bool = True  # stop on a non-finite loss or one far above the first

    def to_json(self) -> dict:
        """The config as written to config.json."""
        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items() if k != "recipe"}
        return {"recipe": self.recipe.to_json(), **fields}


def read_config_json(path: Path) -> dict:
    """A run's config.json; ValueError unless it is a regular file holding a JSON object (OSError if unreadable)."""
    if not path.is_file():  # a pipe would wait for a writer forever
        raise ValueError(f"{path} is not a regular file")
    try:
        config = json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError(f"{path} nests its JSON too deep") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return config
