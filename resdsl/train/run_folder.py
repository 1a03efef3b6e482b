"""The run folder: its lock, the files a run writes into it, and what a resume reads back from it."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from resdsl import metrics
from resdsl.files import atomic_write, folders_to_make, reason, writable_folder
from resdsl.recipe import SETTINGS, Recipe
from resdsl.train import checkpoint
from resdsl.train.config import read_config_json
from resdsl.train.errors import RunError
from resdsl.train.lock import Locked, RunLock
from resdsl.train.runspec import setting_text
from resdsl.weights import WeightsError, read_tensor_file

LENGTH = ("iterations", "epochs")  # the recipe settings a resume may change
# what a run writes into its folder besides last.pt (a new run would overwrite them)
RUN_FILES = ("metrics.jsonl", "config.json", "spec.res", "mean.pt", "best.pt", "ranks.json")


class RunFolder:
    """`out`, the folder of one run: locked by one process, written file by file (each whole or not at all)."""

    def __init__(self, out: Path) -> None:
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} is a file, not a directory")
        self.out = out
        self.last = out / "last.pt"
        self.metrics = out / "metrics.jsonl"
        self.made = folders_to_make(out)
        self.found = set(out.iterdir()) if not self.made else set()
        self.held: RunLock | None = None

    # --- the lock ----------------------------------------------------------------------------

    def lock(self) -> None:
        """Make the folder if needed and lock it for this process; RunError if another process holds it."""
        try:
            writable_folder(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            self.held = RunLock(self.out)
        except Locked as error:
            raise RunError(str(error)) from None
        except OSError as error:
            if self.made:
                shutil.rmtree(self.made[-1], ignore_errors=True)
            raise RunError(f"cannot write to the run directory {self.out}: {reason(error)}") from None

    def release(self) -> None:
        if self.held is not None:
            self.held.release()

    def check_start(self, resume: bool) -> None:
        """RunError unless a resume finds last.pt and a new run finds no file of an earlier run (which it would
        overwrite)."""
        if resume and not self.last.exists():
            raise RunError(f"cannot resume: there is no {self.last} (was the first run given this --out?)")
        if not resume and self.last.exists():
            raise RunError(f"{self.last} exists; pass --resume to continue that run or choose another --out")
        if not resume and (earlier := self.earlier_run_files()):
            raise RunError(f"{self.out} holds an earlier run's {', '.join(earlier)} but no last.pt to --resume "
                           "from; choose another --out, so that they are kept")

    def earlier_run_files(self) -> list[str]:
        """The names of the files a run writes that `out` already holds."""
        if not self.out.is_dir():
            return []
        return [name for name in RUN_FILES if (self.out / name).exists()]

    def remove_stale_temps(self) -> None:
        """Remove the temps of checkpoint writes killed half-way (no live process owns them: we hold the lock)."""
        for stale in checkpoint.remove_stale(self.out):
            warn(f"removed {stale}, left by a checkpoint write that was killed half-way")

    def remove_written(self) -> None:
        """After a fresh run failed before its first step, remove what it wrote: the folders it made for --out,
        or the files it added to an --out that was there. Once a step has run, nothing is removed."""
        try:
            if self.made:
                shutil.rmtree(self.made[-1], ignore_errors=True)
            elif self.out.is_dir():
                for path in set(self.out.iterdir()) - self.found:
                    if path.is_file() and not path.is_symlink():
                        path.unlink(missing_ok=True)
        except OSError:
            pass  # the failure being reported matters more than what is left of the folder

    # --- writing -------------------------------------------------------------------------------

    def start(self, spec: str, config: dict, mean: torch.Tensor | None) -> None:
        """A new run's files: an empty metrics.jsonl, spec.res, mean.pt (if any) and config.json."""
        with self.writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        self.write_file(self.metrics, lambda file: None)
        self.write_file(self.out / "spec.res", lambda file: file.write(spec.encode()))
        if mean is not None:
            self.write_mean(mean)
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        text = json.dumps(config, indent=2) + "\n"
        self.write_file(self.out / "config.json", lambda file: file.write(text.encode()))

    def write_mean(self, mean: torch.Tensor) -> None:
        self.write_file(self.out / "mean.pt", lambda file: torch.save(mean.cpu(), file))

    def write_ranks(self, digests: list[str]) -> None:
        (self.out / "ranks.json").write_text(json.dumps({"digests": digests}, indent=2) + "\n")

    def save(self, path: Path, state: dict, iteration: int) -> None:
        """checkpoint.save, a failure (a full disk) said in one sentence; the previous file stays as it was."""
        try:
            checkpoint.save(path, state)
        except OSError as error:
            if path.exists():
                then = f"the previous {path.name} is kept, and the run can continue with --resume once that is fixed"
            elif self.last.exists():
                then = f"no {path.name} was written, and the run can continue with --resume once that is fixed"
            else:
                then = f"no {path.name} was written, so start the run again once that is fixed"
            raise RunError(f"cannot write {path} at iteration {iteration}: {reason(error)}; {then}") from None

    def write_file(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        with self.writing(path), atomic_write(path) as file:
            write(file)

    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """OSError (a full disk, a read-only folder) while writing `path` as one sentence."""
        try:
            yield
        except OSError as error:
            raise RunError(f"cannot write {path}: {reason(error)}") from None

    # --- resuming ------------------------------------------------------------------------------

    def load_last(self) -> dict:
        """last.pt; RunError if it cannot be read."""
        try:
            return checkpoint.load(self.last)
        except checkpoint.CheckpointError as error:
            raise RunError(f"cannot resume: {error}") from None

    def same_run(self, saved: dict, now: Recipe, settings: dict, steps_per_epoch: int, total: int) -> Recipe:
        """The checkpoint's recipe, if it matches `now` in all but the length and was run with the same run
        `settings`; RunError naming what differs."""
        try:
            before = Recipe.from_json(saved.get("recipe", {}))
        except ValueError:
            raise RunError(f"cannot resume: {self.last} records a recipe this version of resdsl cannot read") from None
        changed = [f"{key} {setting_text(before, key)} (now {setting_text(now, key)})"
                   for key in SETTINGS if key not in LENGTH and getattr(before, key) != getattr(now, key)]
        changed += [f"--{key.replace('_', '-')} {_shown(value)} (now {_shown(settings[key])})"
                    for key, value in saved.get("run", {}).items() if key in settings and settings[key] != value]
        if changed:
            raise RunError(f"cannot resume: {self.last} was trained with {', '.join(changed)}; give the same spec "
                           "and flags as the first run (only --iterations or --epochs may change)")
        if now.schedule.kind == "cosine" and before.total_iterations(steps_per_epoch) != total:
            raise RunError(f"cannot resume {self.last} for another length: a cosine() schedule follows the run's "
                           "length, so its learning rates would not continue; start a new run with --weights "
                           f"{self.last} instead")
        return before

    def keep_metrics_until(self, iteration: int) -> None:
        """Drop the metrics lines past `iteration` (written after the checkpoint a resume starts from)."""
        with self.writing(self.metrics):
            metrics.keep_until(self.metrics, iteration, warn)

    def repair(self, config: dict, mean: torch.Tensor | None) -> None:
        """On resume, write again a config.json or mean.pt that is missing or unreadable (leaving sound ones be)."""
        path = self.out / "config.json"
        damage = _damage(path, read_config_json)
        if damage is not None:
            self.write_config(config)
            warn(f"{path} was {damage}; wrote it again from this run's settings")
        if mean is not None and (damage := _damage(self.out / "mean.pt", _read_mean)) is not None:
            self.write_mean(mean)
            warn(f"{self.out / 'mean.pt'} was {damage}; wrote it again from {self.last}'s mean image")


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _shown(value: object) -> str:
    return "unset" if value is None else str(value)


def _damage(path: Path, read: Callable[[Path], object]) -> str | None:
    """'missing' or 'unreadable' if `read(path)` cannot read `path`, else None."""
    if not path.exists():
        return "missing"
    try:
        read(path)
    except (OSError, ValueError, WeightsError):
        return "unreadable"
    return None


def _read_mean(path: Path) -> torch.Tensor:
    return read_tensor_file(path, "mean image")
