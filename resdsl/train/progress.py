"""Progress: a rich bar when stderr is a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """Shows the run's progress; only rank 0 shows anything."""

    def __init__(self, total: int, start: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self.bar: Progress | None = None
        self.total, self.start = total, start
        self.stats = ""

    def __enter__(self) -> Reporter:
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]iter"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=self.start, stats="")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.stop()

    def step(self, iteration: int, lr: float, loss: float, error: float, images_per_s: float) -> None:
        """Advance the bar after every iteration with the latest figures."""
        if self.bar is not None:
            stats = f"lr {lr:.4g}  loss {loss:.3f}  err {100 * error:5.2f}%  {images_per_s:,.0f} img/s"
            self.bar.update(self.task, completed=iteration, stats=stats)

    def log(self, line: str) -> None:
        """A line that stays: printed above the bar, or on stdout when there is no bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, flush=True)


def clock(seconds: float) -> str:
    """`seconds` as a clock reading: 0:07, 12:05, 3:02:09."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
