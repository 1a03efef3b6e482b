"""`train --tensorboard`: every metrics record also written as TensorBoard scalars into the run folder."""

from __future__ import annotations

from pathlib import Path

from resdsl import metrics

MISSING = "--tensorboard needs the tensorboard package: pip install 'resdsl[tensorboard]'"


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Mirror:
    """Writes each record's values as scalars tagged `KIND/FIELD` (e.g. `train/train_loss`) at its iteration."""

    def __init__(self, folder: Path, resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step tells TensorBoard to drop what a killed run logged after the checkpoint resumed from
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=None if resumed_at is None else resumed_at + 1)

    def write(self, entry: dict) -> None:
        for key, value in metrics.scalars(entry).items():
            self.writer.add_scalar(f"{entry['kind']}/{key}", value, entry["iteration"], walltime=entry["time"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
