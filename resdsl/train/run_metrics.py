"""The run's metrics: records appended to metrics.jsonl (and mirrored to TensorBoard), and the run's clock."""

from __future__ import annotations

import time

from resdsl import metrics
from resdsl.train import tensorboard
from resdsl.train.progress import clock
from resdsl.train.run_folder import RunFolder


class RunMetrics:
    """Builds and writes the metrics records of one process (only the main one writes); times the run."""

    def __init__(self, folder: RunFolder, enabled: bool, steps_per_epoch: int, total: int) -> None:
        self.folder, self.enabled = folder, enabled
        self.steps_per_epoch, self.total = steps_per_epoch, total
        self.started = time.monotonic()
        self.before = 0.0  # seconds of training before this process took over (resumes)
        self.first_iteration = 0
        self.mirror: tensorboard.Mirror | None = None

    def open_mirror(self, resumed_at: int | None) -> None:
        """Also write every record as TensorBoard scalars; `resumed_at` drops what was logged after it."""
        if self.enabled:
            self.mirror = tensorboard.Mirror(self.folder.out, resumed_at)

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()

    def record(self, kind: str, iteration: int, **values: float) -> dict:
        return metrics.record(kind, iteration, iteration / self.steps_per_epoch, self.elapsed(), **values)

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.folder.writing(self.folder.metrics):
                metrics.append(self.folder.metrics, record)
            if self.mirror is not None:
                self.mirror.write(record)

    def elapsed(self) -> float:
        """Seconds of training so far, those before a resume included."""
        return self.before + time.monotonic() - self.started

    def times(self, iteration: int) -> str:
        """'elapsed 1:02 ETA 3:04': the run's time so far and, at this process's pace, the time left."""
        done = iteration - self.first_iteration
        pace = (time.monotonic() - self.started) / done if done else 0.0
        return f"elapsed {clock(self.elapsed())}  ETA {clock(pace * (self.total - iteration))}"
