"""Classification error of a model on a dataset, batched, without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from resdsl.data import Dataset


@torch.no_grad()
def error_rate(model: nn.Module, dataset: Dataset, prepare: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device, batch: int = 500, amp: torch.dtype | None = None,
               channels_last: bool = False) -> float:
    """The fraction of `dataset` that `model` misclassifies; `prepare` turns uint8 images into inputs."""
    was_training = model.training
    model.eval()
    wrong = 0
    for start in range(0, len(dataset), batch):
        part = dataset.subset(torch.arange(start, min(start + batch, len(dataset))))
        images = part.images if isinstance(part.images, torch.Tensor) else part.images.decode()
        inputs = prepare(images.to(device))
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(inputs)
        wrong += int((logits.argmax(1).cpu() != part.labels).sum())
    model.train(was_training)
    return wrong / max(1, len(dataset))
