"""Top-1 and top-5 error of a model on a dataset under the paper's testing protocols, without gradients.

`center` scores one view per image. `10crop` averages the softmax of the ten crops, and `multiscale`
the softmax of the whole image at five sizes, each run fully-convolutionally (the global average
pool averages the class scores over positions). See resdsl.data.views for the views.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from resdsl.data import Dataset, Loader
from resdsl.data.images import ImageFiles
from resdsl.data.views import EvalView


@dataclass(frozen=True)
class Scores:
    """Error rates in [0, 1]; `top5` is None when there are fewer than 5 classes. `non_finite` counts the images
    whose outputs held a NaN or an infinity (scored as errors: such rates mean nothing)."""

    images: int
    top1: float
    top5: float | None
    non_finite: int = 0


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, *,
             prepare: Callable[[torch.Tensor], torch.Tensor],
             normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
             protocol: str = "center", crop: int | None = None, batch: int = 500, amp: torch.dtype | None = None,
             channels_last: bool = False, workers: int | None = None, decoder: str = "auto") -> Scores:
    """Scores of `model` on `dataset`; the arguments are those of `probabilities`."""
    top1 = top5 = non_finite = 0
    for probs, labels in probabilities(model, dataset, device, prepare=prepare, normalize=normalize,
                                       protocol=protocol, crop=crop, batch=batch, amp=amp,
                                       channels_last=channels_last, workers=workers, decoder=decoder):
        labels = labels.to(probs.device)
        non_finite += int((~torch.isfinite(probs)).any(1).sum())
        top1 += int((probs.argmax(1) != labels).sum())
        if dataset.classes >= 5:
            top5 += int((probs.topk(5, dim=1).indices != labels[:, None]).all(1).sum())
    count = max(1, len(dataset))
    return Scores(len(dataset), top1 / count, top5 / count if dataset.classes >= 5 else None, non_finite)


def error_rate(model: nn.Module, dataset: Dataset, prepare: Callable[[torch.Tensor], torch.Tensor],
               device: torch.device, batch: int = 500, amp: torch.dtype | None = None,
               channels_last: bool = False, workers: int | None = None, decoder: str = "auto") -> float:
    """The fraction of `dataset` that `model` misclassifies on its centre view."""
    return evaluate(model, dataset, device, prepare=prepare, batch=batch, amp=amp, channels_last=channels_last,
                    workers=workers, decoder=decoder).top1


@torch.no_grad()
def probabilities(model: nn.Module, dataset: Dataset, device: torch.device, *,
                  prepare: Callable[[torch.Tensor], torch.Tensor],
                  normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  protocol: str = "center", crop: int | None = None, batch: int = 500,
                  amp: torch.dtype | None = None, channels_last: bool = False, workers: int | None = None,
                  decoder: str = "auto") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(the mean softmax over the protocol's views, labels) for each batch of `dataset`, in order.

    `prepare` turns a tensor dataset's uint8 images into the centre-protocol input (the recipe's
    evaluation view); `normalize` turns a view that is already cut into input (default: `prepare`).
    `crop` is the views' side for `10crop` and `multiscale` on tensor datasets (default: the image's).
    `batch` counts views, so a 10-crop batch holds a tenth as many images.
    """
    normalize = normalize or prepare
    was_training = model.training
    model.eval()

    def scores(views: torch.Tensor | list[torch.Tensor], shaped: Callable) -> torch.Tensor:
        """Softmax of a batch of views, or of a list of views of varied sizes (batched by size)."""
        if isinstance(views, torch.Tensor):
            return _softmax(model, shaped(views), amp, channels_last)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, view in enumerate(views):
            by_size.setdefault(tuple(view.shape), []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(views)
        for indices in by_size.values():
            for i, row in zip(indices, _softmax(model, shaped(torch.stack([views[i] for i in indices])), amp,
                                                channels_last), strict=True):
                out[i] = row
        return torch.stack(out)

    images = dataset.images
    side = images.size if isinstance(images, ImageFiles) else crop or images.shape[-1]
    if side is None:
        raise TypeError(f"{dataset.name}'s views have no size yet")
    view = EvalView(protocol, side)
    per_batch = max(1, batch // view.count)
    try:
        if isinstance(images, ImageFiles):
            loader = Loader(dataset, per_batch, shuffle=False, drop_last=False, device=device, view=view,
                            workers=workers, decoder=decoder)
            for views, labels in loader:
                yield _average([scores(v, normalize) for v in views]), labels
            return
        for start in range(0, len(dataset), per_batch):
            chunk = images[start:start + per_batch].to(device)
            labels = dataset.labels[start:start + per_batch]
            if protocol == "center":
                yield scores(chunk, prepare), labels
            else:
                yield _average([scores(v, normalize) for v in view(chunk)]), labels
    finally:
        model.train(was_training)


def _average(scores: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the views' scores, summed in order."""
    total = scores[0]
    for more in scores[1:]:
        total = total + more
    return total / len(scores)


def _softmax(model: nn.Module, inputs: torch.Tensor, amp: torch.dtype | None, channels_last: bool) -> torch.Tensor:
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(inputs.device.type, dtype=amp, enabled=amp is not None):
        logits = model(inputs)
    return logits.float().softmax(1)
