"""`resdsl train`: the loop and what it needs (checkpoints, torchrun, progress); imports torch."""

from resdsl.train.config import RunConfig
from resdsl.train.loop import RunError
from resdsl.train.loop import train as run

__all__ = ["RunConfig", "RunError", "run"]
