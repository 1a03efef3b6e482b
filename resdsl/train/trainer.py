"""The trainer: the model and its optimiser, one SGD step at a given lr (AMP, channels-last, torch.compile),
DistributedDataParallel, and the checks that keep the processes of a torchrun together."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from resdsl.data import Augment
from resdsl.network import Network
from resdsl.recipe import Recipe
from resdsl.train import distributed
from resdsl.train.config import RunConfig
from resdsl.train.errors import RunError
from resdsl.weights import WeightsError, load_failure, load_weights, read_weights, shape_text


class Trainer:
    """`network` as a module on the context's device, optimised by SGD with the recipe's settings."""

    def __init__(self, network: Network, recipe: Recipe, config: RunConfig, context: distributed.Context,
                 say: Callable[[str], None]) -> None:
        self.network, self.config, self.context = network, config, context
        self.device = context.device
        self.amp = _amp_dtype(config.amp, self.device)
        # compiled on a CPU, inductor runs the convolutions channels-last (oneDNN's fast layout) and would copy
        # every weight to it at every step; the module kept channels-last spares those copies
        self.channels_last = self.device.type == "cuda" or config.compile
        self.model: nn.Module = network_module(network, config).to(self.device)
        if config.weights is not None:
            self._load_weights(config.weights, say)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.wrapped = distributed.wrap(self.model, context, config.sync_bn)
        if isinstance(self.wrapped, nn.parallel.DistributedDataParallel):
            self.model = self.wrapped.module  # the weights themselves, as saved and digested
        self.step_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.generator = torch.Generator(self.device)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, images: torch.Tensor, labels: torch.Tensor, lr: float, augment: Augment,
             iteration: int) -> tuple[float, int, float]:
        """One SGD step at `lr` on the augmented `images`; the loss, the wrong predictions and the seconds taken."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        # augmentation randomness is a function of (seed, rank, iteration), so resuming repeats it
        self.generator.manual_seed(_mix(self.config.seed, self.context.rank, iteration))
        inputs = augment(images.to(self.device, non_blocking=True), self.generator)
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
        return loss_value, wrong_value, time.perf_counter() - start

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, saved: dict, path: Path) -> None:
        """The model, optimiser and scaler of the checkpoint `saved` (read from `path`); RunError if it does not fit."""
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RunError(f"cannot resume: {path} does not fit this network ({load_failure(error)})") from None
        if "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])

    def agree(self, flag: bool) -> bool:
        """Whether any rank raised `flag`, so that all ranks act on it at the same iteration."""
        if not self.context.distributed:
            return flag
        return distributed.all_sum([float(flag)], self.context)[0] > 0

    def digests(self) -> list[str] | None:
        """After DDP, every rank's parameter digest (all must be equal); None when there is one process."""
        if not self.context.distributed:
            return None
        return [str(digest) for digest in distributed.all_gather(weights_digest(self.model), self.context)]

    def _load_weights(self, path: Path, say: Callable[[str], None]) -> None:
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
        say(f"fine-tuning from {path}: loaded {len(weights.state) - len(fresh)} of {len(own)} tensors{note}")


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


def _mix(*numbers: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(numbers).encode()).digest()[:8], "little") & (2**63 - 1)


@contextmanager
def _compile_failures() -> Iterator[None]:
    """torch.compile compiles at the first steps: its failure (an unwritable cache folder, a missing compiler)
    as one sentence."""
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as error:
        cause: BaseException = error
        while isinstance(cause, TorchDynamoException) and (
                inner := cause.__cause__ or getattr(cause, "inner_exception", None)) is not None:
            cause = inner
        if isinstance(cause, OSError) and cause.strerror:
            text = cause.strerror + (f": {cause.filename}" if cause.filename else "")
        else:
            text = next(iter(str(cause).strip().splitlines()), "")
        failure = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
        raise RunError(f"torch.compile failed: {failure}; run without --compile") from None
