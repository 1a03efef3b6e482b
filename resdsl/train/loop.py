"""The training loop: the run's steps on the recipe's schedule, logging, evaluation, checkpoints and resume.

What it drives lives beside it: the folder and its files (run_folder), the model and its step (trainer), the
metrics records and clock (run_metrics).
"""

from __future__ import annotations

import math
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import torch

from resdsl.data import DataError
from resdsl.data.images import check_named_decoder
from resdsl.files import reason
from resdsl.network import Network
from resdsl.recipe import Plateau, Recipe
from resdsl.train import checkpoint, distributed, tensorboard
from resdsl.train.config import RunConfig
from resdsl.train.data import InputWatch, RunData, augmentation, fit_network, mean_image, prepare, train_loader
from resdsl.train.errors import RunError
from resdsl.train.evaluate import error_rate
from resdsl.train.progress import Reporter
from resdsl.train.run_folder import RunFolder
from resdsl.train.run_metrics import RunMetrics
from resdsl.train.runspec import standalone_spec
from resdsl.train.trainer import Trainer
from resdsl.weights import Preprocessing

__all__ = ["RunError", "State", "train"]

DIVERGED = 1.5  # a logged loss this many times the first one, after the warm-up, is divergence
SETTLING = 50  # iterations before that is judged: a new net's loss may spike in its first steps (ResNet-18: x5)

T = TypeVar("T")


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
    """Run `config.recipe` on `network`; returns the exit status (0 done; 130 after Ctrl-C, 143 after SIGTERM, as
    a shell reports a process those signals ended)."""
    folder = RunFolder(config.out)
    if config.tensorboard and not tensorboard.available():
        raise RunError(tensorboard.MISSING)
    context = distributed.setup(config.device)
    run: _Run | None = None
    try:
        _on_main(context, lambda: _take(folder, config.resume))  # the other ranks train under rank 0's lock
        run = _Run(network, config, context, folder)
        return run.run()
    except BaseException:
        if folder.held is not None and not config.resume and (run is None or run.state.iteration == 0):
            folder.remove_written()
        raise
    finally:
        folder.release()
        distributed.teardown(context)


def _take(folder: RunFolder, resume: bool) -> None:
    folder.lock()
    folder.check_start(resume)
    folder.remove_stale_temps()


def _on_main(context: distributed.Context, action: Callable[[], T]) -> T | None:
    """`action`'s value on rank 0, None on the others, which wait for it. If it fails (RunError, DataError,
    OSError), rank 0 raises its error and the others a RunError of the same sentence: waiting for rank 0 at their
    next collective instead, they would wait forever."""
    failure, value = None, None
    if context.is_main:
        try:
            value = action()
        except (RunError, DataError, OSError) as error:
            failure = reason(error) if isinstance(error, OSError) else str(error)
            distributed.all_gather(failure, context)
            raise
    failure = distributed.all_gather(failure, context)[0]
    if failure is not None:
        raise RunError(failure)
    return value


class _Run:
    def __init__(self, network: Network, config: RunConfig, context: distributed.Context,
                 folder: RunFolder) -> None:
        self.config, self.recipe, self.context, self.folder = config, config.recipe, context, folder
        self.out = config.out
        self.device = context.device
        check_named_decoder(config.decoder, self.device)
        self.say = _printer(context.is_main)
        _seed_everything(config.seed)
        self.data: RunData = prepare(self.recipe, config.data, config.seed, config.limit_train, config.limit_eval,
                                     network.input_shape)
        self.network = fit_network(network, self.data.train, self.say)
        spec_shape = network.input_shape
        self.trainer = Trainer(self.network, self.recipe, config, context, self.say)

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
        self.state = State(warming=self.recipe.warmup is not None and self.recipe.warmup.until_train_error is not None)

    def run(self) -> int:
        self.metrics = RunMetrics(self.folder, self.context.is_main, self.steps_per_epoch, self.total)
        if self.config.resume:
            self._restore()
        else:
            spec = standalone_spec(self.network, self.recipe, self.steps_per_epoch,
                                   self.network.program.network.span.path)
            _on_main(self.context, lambda: self.folder.start(spec, self._config_json(), self.mean))
        self.metrics.before = self.state.elapsed
        self.say(f"{self.network.name}: {self.network.params:,} params, {len(self.data.train):,} training images "
                 f"from {self.data.root}, "
                 f"{self.total:,} iterations of batch {self.recipe.batch} on {self.device}"
                 + (f" x {self.context.world_size} processes" if self.context.distributed else ""))
        if self.config.tensorboard:
            self.metrics.open_mirror(self.state.iteration if self.config.resume else None)
        try:
            return self._train()
        finally:
            self.metrics.close()

    def _train(self) -> int:
        self.metrics.first_iteration = self.state.iteration
        with Reporter(self.total, self.state.iteration, enabled=self.context.is_main) as progress, \
                _interrupts() as stop:
            self.say = progress.log
            while self.state.iteration < self.total:
                for images, labels in self.input_watch.watch(self.loader, self.say):
                    self._step(images, labels, progress)
                    done = self.state.iteration >= self.total
                    self._periodic(done)
                    received = stop()
                    if self.trainer.agree(received is not None):
                        self._checkpoint()
                        how = "stopped by SIGTERM" if received == signal.SIGTERM else "interrupted"
                        self.say(f"{how} at iteration {self.state.iteration}; wrote {self.folder.last} "
                                 "(continue with --resume)")
                        return 128 + (received or signal.SIGINT)  # another rank's signal: as Ctrl-C
                    if done:
                        break
        self._check_ranks_agree()
        return 0

    # --- one step --------------------------------------------------------------------------

    def _step(self, images: torch.Tensor, labels: torch.Tensor, progress: Reporter) -> None:
        state = self.state
        lr = self.recipe.lr_at(state.iteration, self.steps_per_epoch, state.warming, self.plateau.drops)
        loss, wrong, seconds = self.trainer.step(images, labels, lr, self.augment, state.iteration)
        if self.config.divergence_check and not math.isfinite(loss):
            raise RunError(_diverged(f"the loss became {loss} at iteration {state.iteration + 1}", lr))
        window = state.window
        window[0] += loss * len(labels)
        window[1] += wrong
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
        lr = self.trainer.lr
        warmup = self.recipe.warmup
        if state.warming and not observe_only and warmup is not None and warmup.ends(error):
            state.warming = False
            self.say(f"warm-up ends at iteration {state.iteration}: training error {100 * error:.1f}%")
        if not observe_only:
            self._check_divergence(loss / seen, lr)
        record = self.metrics.record("train", state.iteration, lr=lr, train_loss=round(loss / seen, 6),
                                     train_error=round(error, 6), images_per_s=round(seen / max(seconds, 1e-9), 1))
        self.metrics.write(record)
        self.say(f"iter {state.iteration:>7}  epoch {record['epoch']:7.2f}  lr {lr:<8.4g} "
                 f"loss {record['train_loss']:.4f}  train err {100 * error:6.2f}%  {record['images_per_s']:,.0f} img/s"
                 f"  {self.metrics.times(state.iteration)}")

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
                           f"kept, with {self.folder.last} at that iteration: once that is fixed, evaluate it "
                           f"with `resdsl eval {self.out}` or continue it with --resume") from None

    def _evaluate_now(self, observe_only: bool) -> None:
        cut = _on_main(self.context, lambda: self._evaluate_on_main(observe_only))
        if self.trainer.agree(bool(cut)) and not self.context.is_main:
            self.plateau.drops += 1  # the main process decides; every rank cuts its lr with it

    def _evaluate_on_main(self, observe_only: bool) -> bool:
        """Evaluate, log, keep best.pt; whether the plateau schedule cuts the lr now."""
        trainer, state = self.trainer, self.state
        errors = {}
        for name, dataset in (("val_error", self.data.val), ("test_error", self.data.test)):
            if dataset is not None and len(dataset):
                errors[name] = round(error_rate(trainer.model, dataset, self.augment.eval, self.device,
                                                amp=trainer.amp, channels_last=trainer.channels_last,
                                                workers=self.config.workers, decoder=self.config.decoder), 6)
        self.metrics.write(self.metrics.record("eval", state.iteration, **errors))
        self.say(f"iter {state.iteration:>7}  " + "  ".join(
            f"{k.replace('_', ' ')} {100 * v:.2f}%" for k, v in errors.items()))
        val = errors.get("val_error")
        if val is not None and (state.best_val is None or val < state.best_val):
            state.best_val = val
            self.folder.save(self.out / "best.pt", {"model": trainer.model.state_dict(), **self._eval_needs(),
                                                    "iteration": state.iteration, "val_error": val},
                             state.iteration)
        watched = errors.get("val_error", errors.get("test_error"))
        cut = watched is not None and not observe_only and self.plateau.observe(state.iteration, watched)
        if cut and self.plateau.best is not None:  # a cut follows an error the plateau keeps as its best
            self.say(f"iter {state.iteration:>7}  lr cut by {self.recipe.schedule.factor:g}: the evaluation "
                     f"error has not improved on {100 * self.plateau.best:.2f}% for more than "
                     f"{self.plateau.patience:,} iterations")
        return cut

    # --- checkpoints and resume ------------------------------------------------------------

    def _checkpoint(self) -> None:
        state = self.state
        _on_main(self.context, lambda: self.folder.save(self.folder.last, {
            **self.trainer.state_dict(), "iteration": state.iteration, "epoch": self.loader.epoch,
            "loader": self.loader.state_dict(), "rng": checkpoint.rng_state(), "warming": state.warming,
            "best_val": state.best_val, "window": list(state.window), "elapsed": self.metrics.elapsed(),
            "first_loss": state.first_loss,
            "plateau": self.plateau.state_dict(),
            "recipe": self.recipe.to_json(), "network": self.network.name,
            "run": self._run_settings(), **self._eval_needs(),
        }, state.iteration))

    def _eval_needs(self) -> dict:
        """What evaluating or building the weights needs besides them: the data, and the preprocessing record
        (mean image, input shape, input format) that eval and build read back with resdsl.weights.preprocessing."""
        channels, height, width = self.network.input_shape
        record = Preprocessing(mean=self.mean, input=(channels, height, width))
        return {"dataset": self.recipe.dataset, **record.fields()}

    def _run_settings(self) -> dict:
        """The flags besides the recipe that decide what the run sees: a resume must give the same."""
        return {"seed": self.config.seed, "limit_train": self.config.limit_train}

    def _config_json(self) -> dict:
        """config.json: every flag, the recipe as run and what evaluating the weights needs."""
        return {**self.config.to_json(), "recipe": self.recipe.to_json(),
                "network": self.network.name, "spec": self.network.program.network.span.path,
                **self._eval_needs(), "mean": "mean.pt" if self.mean is not None else None,
                "classes": self.data.train.classes, "params": self.network.params,
                "world_size": self.context.world_size}

    def _restore(self) -> None:
        folder = self.folder
        saved = folder.load_last()
        before = folder.same_run(saved, self.recipe, self._run_settings(), self.steps_per_epoch, self.total)
        if self.total < saved["iteration"]:
            raise RunError(f"cannot resume: {folder.last} is at iteration {saved['iteration']:,}, past the "
                           f"{self.total:,} iterations now asked for")
        self.trainer.load_state_dict(saved, folder.last)
        self.loader.load_state_dict(saved["loader"])
        if "plateau" in saved:
            self.plateau.load_state_dict(saved["plateau"])
        checkpoint.set_rng_state(saved["rng"])
        self.state = State(iteration=saved["iteration"], warming=saved.get("warming", False),
                           best_val=saved.get("best_val"), window=list(saved.get("window", [0.0] * 4)),
                           elapsed=saved.get("elapsed", 0.0), first_loss=saved.get("first_loss"))
        def tidy() -> None:
            folder.keep_metrics_until(self.state.iteration)
            folder.repair(self._config_json(), saved.get("mean", self.mean))

        _on_main(self.context, tidy)
        planned = before.total_iterations(self.steps_per_epoch)
        if self.state.iteration >= self.total:
            self.say(f"{folder.last} has run all {self.total:,} iterations; give a larger --iterations or --epochs "
                     "to train further")
        else:
            extended = f"; it now ends at iteration {self.total:,} (was {planned:,})" if planned != self.total else ""
            self.say(f"resumed from {folder.last} at iteration {self.state.iteration:,}{extended}")

    def _recipe_as_run(self) -> Recipe:
        """The recipe with the crop that was applied (it follows the network to the data's image size): what
        the checkpoints, config.json and spec.res record, so that `eval` sees the views training saw."""
        if self.recipe.augment is None or self.augment.crop is None:  # image folders: the loader crops
            return self.recipe
        return self.recipe.updated(augment=replace(self.recipe.augment, crop=self.augment.crop))

    def _check_ranks_agree(self) -> None:
        """After DDP, every rank must hold the same parameters; ranks.json records each rank's digest."""
        digests = self.trainer.digests()
        if digests is not None and self.context.is_main:
            self.folder.write_ranks(digests)
            if len(set(digests)) != 1:
                raise RunError("the processes ended with different weights (ranks out of sync)")


def _printer(enabled: bool):
    def say(line: str) -> None:
        if enabled:
            print(line, flush=True)
    return say


def _diverged(what: str, lr: float) -> str:
    return (f"training diverged: {what} (lr {lr:g}); try a lower --lr or a --warmup, or pass "
            "--no-divergence-check to keep going")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _interrupts() -> Iterator[Callable[[], signal.Signals | None]]:
    """Turn Ctrl-C, and SIGTERM (a scheduler's preemption, `kill`), into the signal the loop checks for after each
    step (it then checkpoints and stops); None while neither has come."""
    received: list[signal.Signals] = []

    def handle(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum))

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[-1] if received else None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
