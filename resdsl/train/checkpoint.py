"""Checkpoints: written atomically (temp file, fsync, rename), refused clearly when damaged."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from resdsl.files import atomic_write, remove_stale_temps
from resdsl.weights import WeightsError, read_torch_file

REQUIRED = ("model", "optimizer", "iteration", "epoch", "loader", "rng")
# what resuming reads from a checkpoint, and what it must be: a field of another type is refused by name
KINDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (dict, "a state_dict"), "optimizer": (dict, "an optimizer state"), "iteration": (int, "a whole number"),
    "epoch": ((int, float), "a number"), "loader": (dict, "a loader state"), "rng": (dict, "a random state"),
    "scaler": (dict, "a scaler state"), "plateau": (dict, "a schedule state"), "run": (dict, "a dict of settings"),
    "window": ((list, tuple), "a list of numbers"), "elapsed": ((int, float), "a number"),
    "best_val": ((int, float, type(None)), "a number"), "mean": ((torch.Tensor, type(None)), "a tensor"),
}
NAMES = ("last.pt", "best.pt")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one sentence for the user."""


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that `path` is always either the old or the new checkpoint (OSError if neither)."""
    with atomic_write(path, durable=True) as file:
        try:
            torch.save(state, file)
        except RuntimeError as error:
            # a failed write (a full disk) surfaces as the zip writer's RuntimeError raised while handling it
            if isinstance(error.__context__, OSError):
                raise error.__context__ from None
            raise


def remove_stale(folder: Path) -> list[Path]:
    """Delete the temp files of checkpoint writes that were killed half-way; returns them."""
    return [stale for name in NAMES for stale in remove_stale_temps(folder, name)]


def load(path: Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """The checkpoint at `path`; CheckpointError if it is missing, truncated, corrupt or incomplete."""
    try:
        state = read_torch_file(path, "checkpoint")
    except WeightsError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a resdsl training checkpoint (missing {', '.join(missing)})")
    for key, (kind, what) in KINDS.items():
        value = state.get(key)
        if key in state and (not isinstance(value, kind) or isinstance(value, bool)):
            kind_name = type(value).__name__
            raise CheckpointError(f"{path} records a {key} that is {'an' if kind_name[0] in 'aeiou' else 'a'} "
                                  f"{kind_name}, not {what}")
    return state


def rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from, in types torch.load(weights_only=True) accepts."""
    kind, keys, position, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate needs tuples where a round trip may have left lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value
