"""The training loop: SGD on the recipe's schedule, logging, evaluation, checkpoints, resume."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from resdsl import metrics
from resdsl.data import DataError
from resdsl.data.images import check_named_decoder
from resdsl.files import atomic_write, folders_to_make, reason, writable_folder
from resdsl.network import Network
from resdsl.recipe import Plateau, Recipe
from resdsl.train import checkpoint, distributed, tensorboard
from resdsl.train.config import RunConfig, read_config_json
from resdsl.train.data import InputWatch, RunData, augmentation, fit_network, mean_image, prepare, train_loader
from resdsl.train.evaluate import error_rate
from resdsl.train.lock import Locked, RunLock
from resdsl.train.progress import Reporter, clock
from resdsl.train.runspec import setting_text, standalone_spec
from resdsl.weights import (
    Preprocessing,
    WeightsError,
    load_failure,
    load_weights,
    read_tensor_file,
    read_weights,
    shape_text,
)

INTERRUPTED = 130  # exit status after Ctrl-C, as a shell reports SIGINT
DIVERGED = 1.5  # a logged loss this many times the first one, after the warm-up, is divergence
SETTLING = 50  # iterations before that is judged: a new net's loss may spike in its first steps (ResNet-18: x5)
LENGTH = ("iterations", "epochs")  # the recipe settings a resume may change


class RunError(Exception):
    """A run that cannot start or continue; the message is one sentence."""


@dataclass
class State:
    """What the loop carries from step to step besides the model and optimizer."""

    iteration: int = 0
    warming: bool = False
    best_val: float | None = None
    elapsed: float = 0.0  # seconds of training before this process took over (resumes)
    first_loss: float | None = None  # the loss of the first log line: what divergence is measured against
    # sums since the last log line: loss, wrong predictions, images, seconds
    window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])


def train(network: Network, config: RunConfig) -> int:
    """Run `config.recipe` on `network`; returns the exit status (0 done, 130 interrupted)."""
    last = config.out / "last.pt"
    if config.out.exists() and not config.out.is_dir():
        raise RunError(f"--out {config.out} is a file, not a directory")
    if config.tensorboard and not tensorboard.available():
        raise RunError(tensorboard.MISSING)
    made = folders_to_make(config.out)
    found = set(config.out.iterdir()) if not made else set()
    context = distributed.setup(config.device)
    held: RunLock | None = None
    run: _Run | None = None
    try:
        if context.is_main:  # the other ranks of a torchrun train under rank 0's lock
            held = _lock(config.out, made)
        if config.resume and not last.exists():
            raise RunError(f"cannot resume: there is no {last} (was the first run given this --out?)")
        if not config.resume and last.exists():
            raise RunError(f"{last} exists; pass --resume to continue that run or choose another --out")
        if context.is_main:
            _remove_stale_temps(config.out)
        run = _Run(network, config, context)
        return run.run()
    except BaseException:
        if held is not None and not config.resume and (run is None or run.state.iteration == 0):
            _remove_written(config.out, made, found)
        raise
    finally:
        if held is not None:
            held.release()
        distributed.teardown(context)


def _remove_written(out: Path, made: list[Path], found: set[Path]) -> None:
    """After a fresh run failed before its first step, remove what it wrote: the folders it made for --out,
    or the files it added to an --out that was there. Once a step has run, nothing is removed."""
    try:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        elif out.is_dir():
            for path in set(out.iterdir()) - found:
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
    except OSError:
        pass  # the failure being reported matters more than what is left of the folder


def _lock(out: Path, made: list[Path]) -> RunLock:
    """Make the run folder if needed and lock it for this process; RunError if another process holds it."""
    try:
        writable_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        return RunLock(out)
    except Locked as error:
        raise RunError(str(error)) from None
    except OSError as error:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        raise RunError(f"cannot write to the run directory {out}: {reason(error)}") from None


def _remove_stale_temps(out: Path) -> None:
    """Remove the temps of checkpoint writes that were killed half-way (no live process owns them: we hold the lock)."""
    for stale in checkpoint.remove_stale(out):
        _warn(f"removed {stale}, left by a checkpoint write that was killed half-way")


class _Run:
    def __init__(self, network: Network, config: RunConfig, context: distributed.Context) -> None:
        self.config, self.recipe, self.context = config, config.recipe, context
        self.out = config.out
        self.device = context.device
        check_named_decoder(config.decoder, self.device)
        self.say = _printer(context.is_main)
        _seed_everything(config.seed)
        self.data: RunData = prepare(self.recipe, config.data, config.seed, config.limit_train, config.limit_eval,
                                     network.input_shape)
        self.network = fit_network(network, self.data.train, self.say)
        spec_shape = network.input_shape
        self.amp = _amp_dtype(config.amp, self.device)
        self.channels_last = self.device.type == "cuda"

        self.model = network_module(self.network, config).to(self.device)
        if config.weights is not None:
            self._load_weights(config.weights)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.wrapped = distributed.wrap(self.model, context, config.sync_bn)
        self.model = self.wrapped.module if context.distributed else self.model
        self.step_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.recipe.lr, momentum=self.recipe.momentum,
                                         weight_decay=self.recipe.weight_decay, nesterov=self.recipe.nesterov)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)

        self.mean = mean_image(self.recipe, self.data.train, config.workers, config.decoder)
        self.augment = augmentation(self.recipe, self.data.train, spec_shape, self.mean, self.device)
        self.recipe = self._recipe_as_run()
        if self.recipe.batch % context.world_size:
            raise RunError(f"batch {self.recipe.batch} does not split evenly over {context.world_size} processes")
        self.loader = train_loader(self.recipe, self.data.train, self.recipe.batch // context.world_size,
                                   seed=config.seed, rank=context.rank, world_size=context.world_size,
                                   device=self.device, workers=config.workers, decoder=config.decoder,
                                   default_recipe=network.program.network.train is None)
        self.input_watch = InputWatch("raise --workers" + (" or use --decoder nvjpeg" if self.device.type == "cuda"
                                                           else ""))
        if len(self.loader) == 0:
            raise RunError(f"{len(self.data.train)} training images make no batch of {self.recipe.batch}")
        self.steps_per_epoch = len(self.loader)
        self.total = self.recipe.total_iterations(self.steps_per_epoch)
        self.plateau = Plateau(self.recipe.schedule, self.steps_per_epoch)
        self.generator = torch.Generator(self.device)
        self.state = State(warming=self.recipe.warmup is not None and self.recipe.warmup.until_train_error is not None)
        self.metrics_path = self.out / "metrics.jsonl"
        self.mirror: tensorboard.Mirror | None = None

    def run(self) -> int:
        self.started = time.monotonic()
        if self.config.resume:
            self._restore()
        elif self.context.is_main:
            self._start_fresh()
        distributed.barrier(self.context)
        self.say(f"{self.network.name}: {self.network.params:,} params, {len(self.data.train):,} training images "
                 f"from {self.data.root}, "
                 f"{self.total:,} iterations of batch {self.recipe.batch} on {self.device}"
                 + (f" x {self.context.world_size} processes" if self.context.distributed else ""))
        if self.config.tensorboard and self.context.is_main:
            self.mirror = tensorboard.Mirror(self.out, self.state.iteration if self.config.resume else None)
        try:
            return self._train()
        finally:
            if self.mirror is not None:
                self.mirror.close()

    def _train(self) -> int:
        self.first_iteration = self.state.iteration
        with Reporter(self.total, self.state.iteration, enabled=self.context.is_main) as progress, \
                _interrupts() as stop:
            self.say = progress.log
            while self.state.iteration < self.total:
                for images, labels in self.input_watch.watch(self.loader, self.say):
                    self._step(images, labels, progress)
                    done = self.state.iteration >= self.total
                    self._periodic(done)
                    if self._agree(stop()):
                        self._checkpoint()
                        self.say(f"interrupted at iteration {self.state.iteration}; wrote {self.out / 'last.pt'} "
                                 "(continue with --resume)")
                        return INTERRUPTED
                    if done:
                        break
        self._check_ranks_agree()
        return 0

    # --- one step --------------------------------------------------------------------------

    def _step(self, images: torch.Tensor, labels: torch.Tensor, progress: Reporter) -> None:
        state = self.state
        lr = self.recipe.lr_at(state.iteration, self.steps_per_epoch, state.warming, self.plateau.drops)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        # augmentation randomness is a function of (seed, rank, iteration), so resuming repeats it
        self.generator.manual_seed(_mix(self.config.seed, self.context.rank, state.iteration))
        inputs = self.augment(images.to(self.device, non_blocking=True), self.generator)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _compile_failures() if self.config.compile else nullcontext():
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                logits = self.step_model(inputs)
                loss = self.criterion(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        wrong = (logits.argmax(1) != labels).sum()
        loss_value, wrong_value = float(loss.detach()), int(wrong)
        if self.config.divergence_check and not math.isfinite(loss_value):
            raise RunError(_diverged(f"the loss became {loss_value} at iteration {state.iteration + 1}", lr))
        seconds = time.perf_counter() - start
        window = state.window
        window[0] += loss_value * len(labels)
        window[1] += wrong_value
        window[2] += len(labels)
        window[3] += seconds
        state.iteration += 1
        progress.step(state.iteration, lr, window[0] / window[2], window[1] / window[2],
                      window[2] * self.context.world_size / max(window[3], 1e-9))

    def _periodic(self, done: bool) -> None:
        """Log, warm-up check, evaluation and checkpoint, each on its interval and at the end.

        A log or evaluation at an end off its interval only observes: it keeps the loss window, the warm-up
        and the plateau as they were, so a finished run made longer continues as an uninterrupted one would.
        """
        iteration, config = self.state.iteration, self.config
        on_log, on_eval = iteration % config.log_every == 0, iteration % config.eval_every == 0
        if on_log or done:
            self._log(observe_only=not on_log)
        on_checkpoint = iteration % config.checkpoint_every == 0 or done
        if on_eval or done:
            # the weights are saved first, so that an evaluation that fails loses no training
            self._checkpoint()
            self._evaluate(observe_only=not on_eval)
        if on_checkpoint:
            self._checkpoint()  # again after an evaluation: last.pt then holds what it observed (best, plateau)

    def _log(self, observe_only: bool = False) -> None:
        state = self.state
        loss, wrong, seen, _ = distributed.all_sum([*state.window[:3], 0.0], self.context)
        seconds = state.window[3]
        if not observe_only:
            state.window = [0.0, 0.0, 0.0, 0.0]
        error = wrong / seen
        lr = self.optimizer.param_groups[0]["lr"]
        if state.warming and not observe_only and self.recipe.warmup.ends(error):
            state.warming = False
            self.say(f"warm-up ends at iteration {state.iteration}: training error {100 * error:.1f}%")
        if not observe_only:
            self._check_divergence(loss / seen, lr)
        record = self._record("train", lr=lr, train_loss=round(loss / seen, 6), train_error=round(error, 6),
                              images_per_s=round(seen / max(seconds, 1e-9), 1))
        self._write_metrics(record)
        self.say(f"iter {state.iteration:>7}  epoch {record['epoch']:7.2f}  lr {lr:<8.4g} "
                 f"loss {record['train_loss']:.4f}  train err {100 * error:6.2f}%  {record['images_per_s']:,.0f} img/s"
                 f"  {self._times()}")

    def _check_divergence(self, loss: float, lr: float) -> None:
        """RunError if a logged loss after the warm-up is far above the first one (unless --no-divergence-check)."""
        state = self.state
        if state.first_loss is None:
            state.first_loss = loss
            return
        warmup = self.recipe.warmup
        warming = (state.warming or state.iteration <= SETTLING
                   or (warmup is not None and state.iteration <= (warmup.iterations or 0)))
        if self.config.divergence_check and not warming and loss > DIVERGED * state.first_loss:
            raise RunError(_diverged(f"the loss rose from {state.first_loss:.4g} to {loss:.4g} by iteration "
                                     f"{state.iteration:,}", lr))

    def _evaluate(self, observe_only: bool = False) -> None:
        """Evaluate; a failure (an unreadable image, a full disk) says that the run is kept and how to evaluate it."""
        try:
            self._evaluate_now(observe_only)
        except (DataError, RunError, OSError) as error:
            failure = reason(error) if isinstance(error, OSError) else str(error)
            raise RunError(f"the evaluation at iteration {self.state.iteration:,} failed: {failure}; the run is "
                           f"kept, with {self.out / 'last.pt'} at that iteration: once that is fixed, evaluate it "
                           f"with `resdsl eval {self.out}` or continue it with --resume") from None

    def _evaluate_now(self, observe_only: bool) -> None:
        cut = False
        if self.context.is_main:
            errors = {}
            for name, dataset in (("val_error", self.data.val), ("test_error", self.data.test)):
                if dataset is not None and len(dataset):
                    errors[name] = round(error_rate(self.model, dataset, self.augment.eval, self.device,
                                                    amp=self.amp, channels_last=self.channels_last,
                                                    workers=self.config.workers, decoder=self.config.decoder), 6)
            self._write_metrics(self._record("eval", **errors))
            self.say(f"iter {self.state.iteration:>7}  " + "  ".join(
                f"{k.replace('_', ' ')} {100 * v:.2f}%" for k, v in errors.items()))
            val = errors.get("val_error")
            if val is not None and (self.state.best_val is None or val < self.state.best_val):
                self.state.best_val = val
                self._save(self.out / "best.pt", {"model": self.model.state_dict(), **self._eval_needs(),
                                                  "iteration": self.state.iteration, "val_error": val})
            watched = errors.get("val_error", errors.get("test_error"))
            cut = watched is not None and not observe_only and self.plateau.observe(self.state.iteration, watched)
            if cut:
                self.say(f"iter {self.state.iteration:>7}  lr cut by {self.recipe.schedule.factor:g}: the evaluation "
                         f"error has not improved on {100 * self.plateau.best:.2f}% for more than "
                         f"{self.plateau.patience:,} iterations")
        distributed.barrier(self.context)
        if self._agree(cut) and not self.context.is_main:
            self.plateau.drops += 1  # the main process decides; every rank cuts its lr with it

    # --- checkpoints -----------------------------------------------------------------------

    def _checkpoint(self) -> None:
        if self.context.is_main:
            state = self.state
            self._save(self.out / "last.pt", {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": state.iteration, "epoch": self.loader.epoch,
                "loader": self.loader.state_dict(), "rng": checkpoint.rng_state(), "warming": state.warming,
                "best_val": state.best_val, "window": list(state.window), "elapsed": self._elapsed(),
                "first_loss": state.first_loss,
                "plateau": self.plateau.state_dict(),
                "recipe": self.recipe.model_dump(mode="json"), "network": self.network.name,
                "run": self._run_settings(), **self._eval_needs(),
            })
        distributed.barrier(self.context)

    def _load_weights(self, path: Path) -> None:
        """Start from the weights in `path`; a head of another size is re-initialised unless --strict."""
        try:
            weights = read_weights(path)
            fresh = load_weights(self.model, weights, self.network.name, new_head=not self.config.strict)
        except WeightsError as error:
            hint = "; without --strict a last layer of another size is re-initialised" if error.head_only else ""
            raise RunError(f"{error}{hint}") from None
        own = self.model.state_dict()
        note = "" if not fresh else "; re-initialised " + ", ".join(
            f"{key} ({shape_text(weights.state[key])} in the file, {shape_text(own[key])} here)" for key in fresh)
        self.say(f"fine-tuning from {path}: loaded {len(weights.state) - len(fresh)} of {len(own)} tensors{note}")

    def _save(self, path: Path, state: dict) -> None:
        """checkpoint.save, a failure (a full disk) said in one sentence; the previous file stays as it was."""
        try:
            checkpoint.save(path, state)
        except OSError as error:
            if path.exists():
                then = f"the previous {path.name} is kept, and the run can continue with --resume once that is fixed"
            elif (self.out / "last.pt").exists():
                then = f"no {path.name} was written, and the run can continue with --resume once that is fixed"
            else:
                then = f"no {path.name} was written, so start the run again once that is fixed"
            raise RunError(f"cannot write {path} at iteration {self.state.iteration}: {reason(error)}; {then}") \
                from None

    def _eval_needs(self) -> dict:
        """What evaluating or building the weights needs besides them: the data, and the preprocessing record
        (mean image, input shape, input format) that eval and build read back with resdsl.weights.preprocessing."""
        record = Preprocessing(mean=self.mean, input=tuple(self.network.input_shape))
        return {"dataset": self.recipe.dataset, **record.fields()}

    def _run_settings(self) -> dict:
        """The flags besides the recipe that decide what the run sees: a resume must give the same."""
        return {"seed": self.config.seed, "limit_train": self.config.limit_train}

    def _restore(self) -> None:
        last = self.out / "last.pt"
        try:
            saved = checkpoint.load(last)
        except checkpoint.CheckpointError as error:
            raise RunError(f"cannot resume: {error}") from None
        before = self._same_run(saved)
        if self.total < saved["iteration"]:
            raise RunError(f"cannot resume: {last} is at iteration {saved['iteration']:,}, past the "
                           f"{self.total:,} iterations now asked for")
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RunError(f"cannot resume: {self.out / 'last.pt'} does not fit this network "
                           f"({load_failure(error)})") from None
        if "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        self.loader.load_state_dict(saved["loader"])
        if "plateau" in saved:
            self.plateau.load_state_dict(saved["plateau"])
        checkpoint.set_rng_state(saved["rng"])
        self.state = State(iteration=saved["iteration"], warming=saved.get("warming", False),
                           best_val=saved.get("best_val"), window=list(saved.get("window", [0.0] * 4)),
                           elapsed=saved.get("elapsed", 0.0), first_loss=saved.get("first_loss"))
        if self.context.is_main:
            with self._writing(self.metrics_path):
                metrics.keep_until(self.metrics_path, self.state.iteration, _warn)
            self._repair_run_files(saved.get("mean", self.mean))
        planned = before.total_iterations(self.steps_per_epoch)
        if self.state.iteration >= self.total:
            self.say(f"{last} has run all {self.total:,} iterations; give a larger --iterations or --epochs "
                     "to train further")
        else:
            extended = f"; it now ends at iteration {self.total:,} (was {planned:,})" if planned != self.total else ""
            self.say(f"resumed from {last} at iteration {self.state.iteration:,}{extended}")

    def _same_run(self, saved: dict) -> Recipe:
        """The checkpoint's recipe, if it matches this run's in all but the length; RunError naming what differs."""
        last = self.out / "last.pt"
        try:
            before = Recipe.model_validate(saved.get("recipe", {}))
        except ValueError:
            raise RunError(f"cannot resume: {last} records a recipe this version of resdsl cannot read") from None
        now = self.recipe
        changed = [f"{key} {setting_text(before, key)} (now {setting_text(now, key)})"
                   for key in Recipe.model_fields if key not in LENGTH and getattr(before, key) != getattr(now, key)]
        settings = self._run_settings()
        changed += [f"--{key.replace('_', '-')} {_shown(value)} (now {_shown(settings[key])})"
                    for key, value in saved.get("run", {}).items() if key in settings and settings[key] != value]
        if changed:
            raise RunError(f"cannot resume: {last} was trained with {', '.join(changed)}; give the same spec and "
                           "flags as the first run (only --iterations or --epochs may change)")
        lengths = before.total_iterations(self.steps_per_epoch), self.total
        if now.schedule.kind == "cosine" and lengths[0] != lengths[1]:
            raise RunError(f"cannot resume {last} for another length: a cosine() schedule follows the run's length, "
                           "so its learning rates would not continue; start a new run with --weights "
                           f"{last} instead")
        return before

    def _start_fresh(self) -> None:
        with self._writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        spec = standalone_spec(self.network, self.recipe, self.steps_per_epoch, self.network.program.network.span.path)
        self._write_file(self.metrics_path, lambda file: None)
        self._write_file(self.out / "spec.res", lambda file: file.write(spec.encode()))
        if self.mean is not None:
            self._write_mean(self.mean)
        self._write_config()

    def _write_config(self) -> None:
        config = {**self.config.to_json(), "recipe": self.recipe.model_dump(mode="json"),
                  "network": self.network.name, "spec": self.network.program.network.span.path,
                  **self._eval_needs(), "mean": "mean.pt" if self.mean is not None else None,
                  "classes": self.data.train.classes, "params": self.network.params,
                  "world_size": self.context.world_size}
        text = json.dumps(config, indent=2) + "\n"
        self._write_file(self.out / "config.json", lambda file: file.write(text.encode()))

    def _write_mean(self, mean: torch.Tensor) -> None:
        self._write_file(self.out / "mean.pt", lambda file: torch.save(mean.cpu(), file))

    def _repair_run_files(self, mean: torch.Tensor | None) -> None:
        """On resume, write again a config.json or mean.pt that is missing or unreadable (leaving sound ones be)."""
        config = self.out / "config.json"
        damage = _damage(config, read_config_json)
        if damage is not None:
            self._write_config()
            _warn(f"{config} was {damage}; wrote it again from this run's settings")
        if mean is not None and (damage := _damage(self.out / "mean.pt", _read_mean)) is not None:
            self._write_mean(mean)
            _warn(f"{self.out / 'mean.pt'} was {damage}; wrote it again from {self.out / 'last.pt'}'s mean image")

    def _recipe_as_run(self) -> Recipe:
        """The recipe with the crop that was applied (it follows the network to the data's image size): what
        the checkpoints, config.json and spec.res record, so that `eval` sees the views training saw."""
        if self.recipe.augment is None or self.augment.crop is None:  # image folders: the loader crops
            return self.recipe
        return self.recipe.model_copy(update={"augment": self.recipe.augment.model_copy(
            update={"crop": self.augment.crop})})

    # --- helpers ---------------------------------------------------------------------------

    def _record(self, kind: str, **values: float) -> dict:
        return metrics.record(kind, self.state.iteration, self.state.iteration / self.steps_per_epoch,
                              self._elapsed(), **values)

    def _times(self) -> str:
        """'elapsed 1:02 ETA 3:04': the run's time so far and, at this process's pace, the time left."""
        done = self.state.iteration - self.first_iteration
        pace = (time.monotonic() - self.started) / done if done else 0.0
        return f"elapsed {clock(self._elapsed())}  ETA {clock(pace * (self.total - self.state.iteration))}"

    def _elapsed(self) -> float:
        return self.state.elapsed + time.monotonic() - self.started

    def _write_metrics(self, record: dict) -> None:
        if self.context.is_main:
            with self._writing(self.metrics_path):
                metrics.append(self.metrics_path, record)
            if self.mirror is not None:
                self.mirror.write(record)

    def _write_file(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        with self._writing(path), atomic_write(path) as file:
            write(file)

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """OSError (a full disk, a read-only folder) while writing `path` as one sentence."""
        try:
            yield
        except OSError as error:
            raise RunError(f"cannot write {path}: {reason(error)}") from None

    def _agree(self, stop: bool) -> bool:
        """Whether any rank was interrupted, so that all ranks stop at the same iteration."""
        if not self.context.distributed:
            return stop
        return distributed.all_sum([float(stop)], self.context)[0] > 0

    def _check_ranks_agree(self) -> None:
        """After DDP, every rank must hold the same parameters; ranks.json records each rank's digest."""
        if not self.context.distributed:
            return
        digests = distributed.all_gather(weights_digest(self.model), self.context)
        if self.context.is_main:
            (self.out / "ranks.json").write_text(json.dumps({"digests": digests}, indent=2) + "\n")
            if len(set(digests)) != 1:
                raise RunError("the processes ended with different weights (ranks out of sync)")


def network_module(network: Network, config: RunConfig) -> nn.Module:
    return network.to_torch(zero_init_residual=config.zero_init_residual, seed=config.seed)


def weights_digest(model: nn.Module) -> str:
    """A SHA-256 over every parameter, in order.

    Buffers are left out: DDP copies rank 0's BN statistics to the others at each forward,
    so after the last step each rank holds the statistics of its own last batch.
    """
    digest = hashlib.sha256()
    for name, tensor in model.named_parameters():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    if amp is None:
        return None
    if amp == "fp16" and device.type != "cuda":
        raise RunError("--amp fp16 needs a CUDA GPU; use --amp bf16 on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _printer(enabled: bool):
    def say(line: str) -> None:
        if enabled:
            print(line, flush=True)
    return say


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _diverged(what: str, lr: float) -> str:
    return (f"training diverged: {what} (lr {lr:g}); try a lower --lr or a --warmup, or pass "
            "--no-divergence-check to keep going")


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


@contextmanager
def _compile_failures() -> Iterator[None]:
    """torch.compile compiles at the first steps: its failure (an unwritable cache folder, a missing compiler)
    as one sentence."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as error:
        cause: BaseException = error
        while isinstance(cause, TorchDynamoException) and (cause.__cause__ or getattr(cause, "inner_exception", None)):
            cause = cause.__cause__ or cause.inner_exception
        if isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror + (f": {cause.filename}" if cause.filename else "")
        else:
            text = next(iter(str(cause).strip().splitlines()), "")
        failure = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
        raise RunError(f"torch.compile failed: {failure}; run without --compile") from None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _mix(*numbers: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(numbers).encode()).digest()[:8], "little") & (2**63 - 1)


@contextmanager
def _interrupts() -> Iterator:
    """Turn Ctrl-C into a flag the loop checks after each step (it then checkpoints and stops)."""
    flag = {"set": False}

    def handle(signum, frame) -> None:
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: flag["set"]
    finally:
        signal.signal(signal.SIGINT, previous)
