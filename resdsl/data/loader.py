"""`Loader`: shuffled batches of a Dataset, reproducible, resumable and sharded across ranks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch

from resdsl.data.dataset import Dataset
from resdsl.data.folder import FolderBatches, Request, View
from resdsl.data.images import ImageFiles
from resdsl.data.locate import DataError
from resdsl.data.views import TrainView


class Loader:
    """Batches of (uint8 images, int64 labels) on `device`, one epoch per iteration.

    `batch_size` is per rank. Each epoch's order is a permutation seeded by (seed, epoch), the
    same on every rank; rank r takes every world_size-th index of it, so ranks are disjoint
    and all get the same number of batches (without drop_last the order wraps to fill them).

    Tensor datasets are gathered on the device. Image folders are decoded and cropped to `view`
    by `workers` processes (see resdsl.data.folder) with `decoder`; a training view's random
    draws are seeded by (seed, epoch, rank, batch), so a resumed run sees the same crops.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        view: View | None = None,
        workers: int | None = None,
        decoder: str = "auto",
    ) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, not {batch_size}, {rank}, {world_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        # Tensor datasets live on the device whole (CIFAR: 150 MB), so a batch is one gather there.
        images = dataset.images
        self.view, self.folder = view, None
        if isinstance(images, ImageFiles):
            if view is None:
                raise ValueError("an image folder's Loader needs the view to crop")
            self.folder = FolderBatches(images, view, device=self.device, workers=workers, decoder=decoder)
        else:
            self.images = images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.epoch = 0
        self.position = 0  # batches of the current epoch already yielded
        if len(self) == 0:
            raise DataError(f"{dataset.name} has too few images ({len(dataset)}) for one batch of {batch_size} "
                            f"on each of {world_size} rank(s)")

    def _per_rank(self) -> int:
        n = len(self.dataset)
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's indices for `epoch`, in the order they are served."""
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed & 0xFFFFFFFF) << 32 | epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = self._per_rank() * self.world_size
        if total > n:
            order = order.repeat(-(-total // n))
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(self.epoch)
        batches = [order[index * self.batch_size:(index + 1) * self.batch_size]
                   for index in range(self.position, len(self))]
        images = self._gather(batches) if self.folder is None else self._folder(self.folder, batches)
        for chosen, batch in zip(batches, images, strict=True):
            self.position += 1
            yield batch, self.labels[chosen.to(self.device)]
        self.epoch += 1
        self.position = 0

    def _gather(self, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        for chosen in batches:
            yield self.images[chosen.to(self.device)]

    def _folder(self, folder: FolderBatches, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        training = isinstance(self.view, TrainView)
        first = self.position
        requests = [Request(chosen.numpy(), (self.seed % 2**64, self.epoch, self.rank, first + i) if training else None)
                    for i, chosen in enumerate(batches)]
        # a test view's batches may be lists of images (folder.Views); resdsl.train.evaluate reads them so
        return cast(Iterator[torch.Tensor], folder(requests))

    def forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches across epochs without end."""
        while True:
            yield from self

    def state_dict(self) -> dict:
        """Where the loader stands: epoch, batches served in it, and the seed of the epoch orders."""
        if self.position >= len(self):
            return {"epoch": self.epoch + 1, "position": 0, "seed": self.seed}
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the next batch is the one that would have followed."""
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
