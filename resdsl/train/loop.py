"""The training loop: SGD on the recipe's schedule, logging, evaluation, checkpoints, resume."""

from __future__ import annotations

import hashlib
import json
import math
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from resdsl.network import Network
from resdsl.recipe import Plateau
from resdsl.train import checkpoint, distributed
from resdsl.train.config import RunConfig
from resdsl.train.data import InputWatch, RunData, augmentation, fit_network, mean_image, prepare, train_loader
from resdsl.train.evaluate import error_rate
from resdsl.train.progress import Reporter

INTERRUPTED = 130  # exit status after Ctrl-C, as a shell reports SIGINT


class RunError(Exception):
    """A run that cannot start or continue; the message is one sentence."""


@dataclass
class State:
    """What the loop carries from step to step besides the model and optimizer."""

    iteration: int = 0
    warming: bool = False
    best_val: float | None = None
    # sums since the last log line: loss, wrong predictions, images, seconds
    window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])


def train(network: Network, config: RunConfig) -> int:
    """Run `config.recipe` on `network`; returns the exit status (0 done, 130 interrupted)."""
    last = config.out / "last.pt"
    if config.resume and not last.exists():
        raise RunError(f"cannot resume: there is no {last} (was the first run given this --out?)")
    if not config.resume and last.exists():
        raise RunError(f"{last} exists; pass --resume to continue that run or choose another --out")
    context = distributed.setup(config.device)
    try:
        return _Run(network, config, context).run()
    finally:
        distributed.teardown(context)


class _Run:
    def __init__(self, network: Network, config: RunConfig, context: distributed.Context) -> None:
        self.config, self.recipe, self.context = config, config.recipe, context
        self.device = context.device
        self.say = _printer(context.is_main)
        _seed_everything(config.seed)
        self.data: RunData = prepare(self.recipe, config.data, config.seed, config.limit_train, config.limit_eval,
                                     network.input_shape)
        self.network = fit_network(network, self.data.train, self.say)
        spec_shape = network.input_shape
        self.amp = _amp_dtype(config.amp, self.device)
        self.channels_last = self.device.type == "cuda"

        self.model = network_module(self.network, config).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.wrapped = distributed.wrap(self.model, context, config.sync_bn)
        self.model = self.wrapped.module if context.distributed else self.model
        self.step_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.recipe.lr, momentum=self.recipe.momentum,
                                         weight_decay=self.recipe.weight_decay, nesterov=self.recipe.nesterov)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)

        self.mean = mean_image(self.recipe, self.data.train)
        self.augment = augmentation(self.recipe, self.data.train, spec_shape, self.mean, self.device)
        if self.recipe.batch % context.world_size:
            raise RunError(f"batch {self.recipe.batch} does not split evenly over {context.world_size} processes")
        self.loader = train_loader(self.recipe, self.data.train, self.recipe.batch // context.world_size,
                                   seed=config.seed, rank=context.rank, world_size=context.world_size,
                                   device=self.device, workers=config.workers, decoder=config.decoder)
        self.input_watch = InputWatch("raise --workers" + (" or use --decoder nvjpeg" if self.device.type == "cuda"
                                                           else ""))
        if len(self.loader) == 0:
            raise RunError(f"{len(self.data.train)} training images make no batch of {self.recipe.batch}")
        self.steps_per_epoch = len(self.loader)
        self.total = self.recipe.total_iterations(self.steps_per_epoch)
        self.plateau = Plateau(self.recipe.schedule, self.steps_per_epoch)
        self.generator = torch.Generator(self.device)
        self.state = State(warming=self.recipe.warmup is not None and self.recipe.warmup.until_train_error is not None)
        self.out = config.out
        self.metrics_path = self.out / "metrics.jsonl"

    def run(self) -> int:
        if self.config.resume:
            self._restore()
        elif self.context.is_main:
            self._start_fresh()
        distributed.barrier(self.context)
        self.say(f"{self.network.name}: {self.network.params:,} params, {len(self.data.train):,} training images "
                 f"from {self.data.root}, "
                 f"{self.total:,} iterations of batch {self.recipe.batch} on {self.device}"
                 + (f" x {self.context.world_size} processes" if self.context.distributed else ""))
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
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.step_model(inputs)
            loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        wrong = (logits.argmax(1) != labels).sum()
        loss_value, wrong_value = float(loss.detach()), int(wrong)
        if not math.isfinite(loss_value):
            raise RunError(f"the loss became {loss_value} at iteration {state.iteration + 1} (lr {lr:g}); "
                           "try a lower --lr or a warm-up")
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
        """Log, warm-up check, evaluation and checkpoint, each on its interval and at the end."""
        iteration, config = self.state.iteration, self.config
        if iteration % config.log_every == 0 or done:
            self._log()
        if iteration % config.eval_every == 0 or done:
            self._evaluate()
        if iteration % config.checkpoint_every == 0 or done:
            self._checkpoint()

    def _log(self) -> None:
        state = self.state
        loss, wrong, seen, _ = distributed.all_sum([*state.window[:3], 0.0], self.context)
        seconds = state.window[3]
        state.window = [0.0, 0.0, 0.0, 0.0]
        error = wrong / seen
        lr = self.optimizer.param_groups[0]["lr"]
        if state.warming and self.recipe.warmup.ends(error):
            state.warming = False
            self.say(f"warm-up ends at iteration {state.iteration}: training error {100 * error:.1f}%")
        record = {"iteration": state.iteration, "epoch": round(state.iteration / self.steps_per_epoch, 4), "lr": lr,
                  "train_loss": round(loss / seen, 6), "train_error": round(error, 6),
                  "images_per_s": round(seen / max(seconds, 1e-9), 1)}
        self._write_metrics(record)
        self.say(f"iter {state.iteration:>7}  epoch {record['epoch']:7.2f}  lr {lr:<8.4g} "
                 f"loss {record['train_loss']:.4f}  train err {100 * error:6.2f}%  {record['images_per_s']:,.0f} img/s")

    def _evaluate(self) -> None:
        cut = False
        if self.context.is_main:
            errors = {}
            for name, dataset in (("val_error", self.data.val), ("test_error", self.data.test)):
                if dataset is not None and len(dataset):
                    errors[name] = round(error_rate(self.model, dataset, self.augment.eval, self.device,
                                                    amp=self.amp, channels_last=self.channels_last), 6)
            record = {"iteration": self.state.iteration,
                      "epoch": round(self.state.iteration / self.steps_per_epoch, 4), **errors}
            self._write_metrics(record)
            self.say(f"iter {self.state.iteration:>7}  " + "  ".join(
                f"{k.replace('_', ' ')} {100 * v:.2f}%" for k, v in errors.items()))
            val = errors.get("val_error")
            if val is not None and (self.state.best_val is None or val < self.state.best_val):
                self.state.best_val = val
                checkpoint.save(self.out / "best.pt", {"model": self.model.state_dict(), "mean": self.mean,
                                                       "iteration": self.state.iteration, "val_error": val})
            watched = errors.get("val_error", errors.get("test_error"))
            cut = watched is not None and self.plateau.observe(self.state.iteration, watched)
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
            checkpoint.save(self.out / "last.pt", {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": state.iteration, "epoch": self.loader.epoch,
                "loader": self.loader.state_dict(), "rng": checkpoint.rng_state(), "warming": state.warming,
                "best_val": state.best_val, "window": list(state.window), "mean": self.mean,
                "plateau": self.plateau.state_dict(),
                "recipe": self.recipe.model_dump(mode="json"), "network": self.network.name,
            })
        distributed.barrier(self.context)

    def _restore(self) -> None:
        try:
            saved = checkpoint.load(self.out / "last.pt")
        except checkpoint.CheckpointError as error:
            raise RunError(f"cannot resume: {error}") from None
        if saved.get("recipe") != self.recipe.model_dump(mode="json"):
            raise RunError(f"cannot resume: {self.out / 'last.pt'} was trained with a different recipe; "
                           "give the same spec and flags as the first run")
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RunError(f"cannot resume: {self.out / 'last.pt'} does not fit this network "
                           f"({str(error).splitlines()[0]})") from None
        if "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
        self.loader.load_state_dict(saved["loader"])
        if "plateau" in saved:
            self.plateau.load_state_dict(saved["plateau"])
        checkpoint.set_rng_state(saved["rng"])
        self.state = State(iteration=saved["iteration"], warming=saved.get("warming", False),
                           best_val=saved.get("best_val"), window=list(saved.get("window", [0.0] * 4)))
        if self.context.is_main:
            self._truncate_metrics(self.state.iteration)
        self.say(f"resumed from {self.out / 'last.pt'} at iteration {self.state.iteration}")

    def _start_fresh(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics_path.write_text("")
        (self.out / "spec.res").write_text(_spec_text(self.network))
        (self.out / "config.json").write_text(json.dumps(
            {**self.config.to_json(), "network": self.network.name, "input": list(self.network.input_shape),
             "params": self.network.params, "world_size": self.context.world_size}, indent=2) + "\n")

    # --- helpers ---------------------------------------------------------------------------

    def _write_metrics(self, record: dict) -> None:
        if self.context.is_main:
            with self.metrics_path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop lines a killed run logged after its last checkpoint, so resuming does not repeat them."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["iteration"] <= iteration]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _agree(self, stop: bool) -> bool:
        """Whether any rank was interrupted, so that all ranks stop at the same iteration."""
        if not self.context.distributed:
            return stop
        return distributed.all_sum([float(stop)], self.context)[0] > 0

    def _check_ranks_agree(self) -> None:
        """After DDP, every rank must hold the same parameters; ranks.json records each rank's digest."""
        if not self.context.distributed:
            return
        digests: list[str | None] = [None] * self.context.world_size
        dist.all_gather_object(digests, weights_digest(self.model))
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _mix(*numbers: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(numbers).encode()).digest()[:8], "little") & (2**63 - 1)


def _spec_text(network: Network) -> str:
    """The user's spec files (its extends chain), each under a header naming it."""
    from resdsl.resolve import prelude_source

    prelude = prelude_source().path
    files = [f for path, f in network.program.sources.files.items() if path != prelude and not path.startswith("<-")]
    return "".join(f"# --- {f.path} ---\n{f.text.rstrip()}\n" for f in files)


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
