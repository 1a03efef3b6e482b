"""`resdsl.train(...)`: train a network on its spec's recipe, any setting overridden, as `resdsl train`.

Nothing here prints results or exits: bad arguments raise UsageError, a bad recipe setting SpecError, and a run
that cannot start or go on RunError, DataError, CheckpointError or DeviceError, each one sentence for the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.deploy import load_network
from resdsl.network import Network
from resdsl.resolve import UsageError, check_seed, check_workers

if TYPE_CHECKING:
    from resdsl.expr import Value

@dataclass(frozen=True)
class TrainResult:
    """The run's folder (spec.res, config.json, metrics.jsonl, last.pt, best.pt) and its exit status: 0 when it
    finished, 130 or 143 when Ctrl-C or SIGTERM stopped it (last.pt holds the iteration reached, and `resume=True`
    continues it)."""

    out: Path
    status: int = 0

    @property
    def interrupted(self) -> bool:
        return self.status != 0


def train(spec: str | Path | Network, *, out: str | Path | None = None, data: str | Path | None = None,
          settings: Mapping[str, object] | None = None, recipe: Sequence[str] = (),
          params: dict[str, Value] | None = None, seed: int = 0, checkpoint_every: int = 1000,
          eval_every: int = 1000, log_every: int = 50, resume: bool = False, weights: str | Path | None = None,
          strict: bool = False, tensorboard: bool = False, device: str | None = None, amp: str | None = None,
          compile: bool = False, sync_bn: bool = False, zero_init_residual: bool = False,
          limit_train: int | None = None, limit_eval: int | None = None, workers: int | None = None,
          decoder: str = "auto", divergence_check: bool = True) -> TrainResult:
    """Train `spec` with its train section, `settings` (`{"lr": 0.05, "iterations": 2000}`) and `recipe` lines
    (`"augment pad 4, crop 32, flip"`) over it; the run goes to `out` (default runs/<network>)."""
    check_options(settings or {}, amp, weights, resume, strict, decoder,
                  {"--checkpoint-every": checkpoint_every, "--eval-every": eval_every, "--log-every": log_every,
                   "--limit-train": limit_train, "--limit-eval": limit_eval})
    seed = check_seed(seed)
    workers = check_workers(workers)
    for flag, path in (("--out", out), ("--data", data)):
        if path is not None and not str(path).strip():  # Path("") is the current folder
            raise UsageError(f"{flag} is empty: give a folder")
    network = load_network(spec, params)
    from resdsl.recipe import recipe_of

    run_recipe = recipe_of(network.program, [*setting_lines(settings or {}), *(("--recipe", line) for line in recipe)])

    from resdsl.train import RunConfig, run

    folder = Path(out) if out is not None else Path("runs") / network.name
    config = RunConfig(recipe=run_recipe, out=folder, data=None if data is None else Path(data), seed=seed,
                       device=device, amp=amp, compile=compile, sync_bn=sync_bn,
                       zero_init_residual=zero_init_residual, checkpoint_every=checkpoint_every,
                       eval_every=eval_every, log_every=log_every, limit_train=limit_train, limit_eval=limit_eval,
                       resume=resume, weights=None if weights is None else Path(weights), strict=strict,
                       tensorboard=tensorboard, workers=workers, decoder=decoder, divergence_check=divergence_check)
    return TrainResult(folder, run(network, config))


def setting_lines(settings: Mapping[str, object]) -> list[tuple[str, str]]:
    """Each setting as the flag that gives it and the train-section line it stands for: `("--lr", "lr 0.05")`."""
    from resdsl.recipe import SETTINGS

    return [(f"--{key.replace('_', '-')}", SETTINGS[key].line(value)) for key, value in settings.items()
            if value is not None]


def check_options(settings: Mapping[str, object], amp: str | None, weights: str | Path | None, resume: bool,
                  strict: bool, decoder: str, counts: dict[str, int | None]) -> None:
    from resdsl.data.locate import DECODERS
    from resdsl.recipe import SETTINGS

    if unknown := [key for key in settings if key not in SETTINGS]:
        raise UsageError(f"{unknown[0]!r} is not a recipe setting; give one of {', '.join(SETTINGS)}, or a train "
                         "section line in recipe=[...]")
    if settings.get("iterations") is not None and settings.get("epochs") is not None:
        raise UsageError("give either --iterations or --epochs, not both")
    if amp not in (None, "bf16", "fp16"):
        raise UsageError(f"--amp takes bf16 or fp16, not '{amp}'")
    if weights is not None and resume:
        raise UsageError("--weights starts a new run from weights and --resume continues a run from its last.pt; "
                         "give one")
    if strict and weights is None:
        raise UsageError("--strict applies to --weights, which is not given")
    if decoder not in DECODERS:
        raise UsageError(f"--decoder takes {', '.join(DECODERS)}, not '{decoder}'")
    for name, value in counts.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1, not {value}")
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{key.replace('_', '-')} must be a finite number, not {value}")
