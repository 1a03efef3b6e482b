"""`resdsl train`: the loop (loop) and what it drives: the run folder (run_folder), the model and its step
(trainer), the metrics (run_metrics), checkpoints, torchrun and progress; imports torch."""

from resdsl.train.config import RunConfig
from resdsl.train.errors import RunError
from resdsl.train.loop import train as run

__all__ = ["RunConfig", "RunError", "run"]
