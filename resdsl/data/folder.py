"""An image folder's batches, decoded and cropped in parallel: torch DataLoader workers, prefetch, pinned memory.

The main process decides everything random (which files, and each image's scale, window and mirror,
from the run's seed), so a batch does not depend on which worker made it or how many there are.
With the nvjpeg decoder the workers only read the files; the batch is decoded on the GPU.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from resdsl.data.images import ImageFiles, check_decoder, decode, decode_on_device, has_torchvision, read_file
from resdsl.data.locate import DataError
from resdsl.data.views import EvalView, TrainView
from resdsl.limits import WORKERS_PER_CPU, max_workers, usable_cpus

View = TrainView | EvalView
Views = torch.Tensor | list  # a batch tensor (N x C x H x W), or per view a tensor or a list of image tensors


@dataclass(frozen=True)
class Request:
    """One batch: which files, and for a training view the seed of its images' random draws."""

    indices: np.ndarray
    seed: tuple[int, ...] | None = None

    def draws(self, view: View) -> np.ndarray | None:
        if not isinstance(view, TrainView):
            return None
        assert self.seed is not None, "a training view's request carries its seed"
        return view.draws(len(self.indices), self.seed)


def default_workers() -> int:
    """Worker processes per training process: the CPUs this process may use, shared among the local ranks."""
    return max(1, usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_workers(workers: int) -> None:
    """Raise DataError unless `workers` is from 0 to WORKERS_PER_CPU times the CPUs this process may use."""
    if not 0 <= workers <= max_workers():
        raise DataError(f"--workers {workers} is out of range: give from 0 to {max_workers()} ({WORKERS_PER_CPU} per "
                        f"CPU of the {usable_cpus()} this process may use)")


class FolderBatches:
    """Call with a list of Requests to get their batches of views, uint8, on `device`, in order."""

    def __init__(self, files: ImageFiles, view: View, *, device: torch.device, workers: int | None = None,
                 decoder: str = "auto", prefetch: int = 2) -> None:
        check_decoder(decoder, device)
        if decoder != "pil" and has_torchvision():
            import torchvision.io  # noqa: F401  (imported once here, not once per forked worker)
        self.view, self.device = view, device
        self.on_device = decoder == "nvjpeg"
        self.workers = default_workers() if workers is None else workers
        check_workers(self.workers)
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        self.requests = _Requests()
        self.decode = _Decode(files.paths, view, decoder)
        self.prefetch = prefetch
        self.loader: DataLoader | None = None

    def __call__(self, requests: list[Request]) -> Iterator[Views]:
        self.requests.pending = requests
        with warnings.catch_warnings():
            # torch warns of more workers than CPUs; check_workers has bounded them, and I/O-bound decoding
            # may well want more
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            self.loader = self.loader or DataLoader(
                self.decode, batch_size=None, sampler=self.requests, collate_fn=_same, num_workers=self.workers,
                pin_memory=self.device.type == "cuda" and not self.on_device, persistent_workers=self.workers > 0,
                prefetch_factor=self.prefetch if self.workers else None,
                worker_init_fn=_worker_init if self.workers else None)
            batches = iter(self.loader)
        for request in requests:
            try:
                kind, payload = next(batches)
            except RuntimeError as error:  # a worker died (killed, out of memory, out of shared memory)
                first = str(error).splitlines()[0]
                kind, payload = "error", (f"an image-loading worker process failed ({first}); "
                                          "try fewer --workers or a larger /dev/shm")
            if kind == "error":
                # drop the workers now, not when the garbage collector reaches the traceback
                batches = self.loader = None
                raise DataError(payload)
            if kind == "raw":
                paths, raws = cast(tuple[list[Path], list[torch.Tensor]], payload)
                payload = _views(self.view, decode_on_device(paths, raws, self.device), request.draws(self.view))
            yield _to(cast(Views, payload), self.device)


class _Requests:
    """The DataLoader's sampler: it serves the requests of the current pass, set before each pass."""

    def __init__(self) -> None:
        self.pending: list[Request] = []

    def __iter__(self) -> Iterator[Request]:
        return iter(self.pending)

    def __len__(self) -> int:
        return len(self.pending)


class _Decode(torch.utils.data.Dataset):
    """Runs in the workers: a Request in, ("views", uint8 views) or ("raw", (paths, bytes)) or ("error", message)."""

    def __init__(self, paths: list[Path], view: View, decoder: str) -> None:
        # one bytes array, not a list of objects: forked workers would copy every page a refcount touches
        self.paths = np.array([os.fsencode(path) for path in paths])
        self.view, self.decoder = view, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, request: Request) -> tuple[str, object]:
        paths = [Path(os.fsdecode(bytes(self.paths[i]))) for i in request.indices]
        try:
            raws = [read_file(path) for path in paths]
            if self.decoder == "nvjpeg":
                return "raw", (paths, raws)
            images = [decode(path, raw, self.decoder) for path, raw in zip(paths, raws, strict=True)]
            return "views", _views(self.view, images, request.draws(self.view))
        except DataError as error:
            return "error", str(error)


def _views(view: View, images: list[torch.Tensor], draws: np.ndarray | None) -> Views:
    """A training view: one N x C x S x S tensor. A test view: per view, a batch tensor (or a list if sizes vary)."""
    if isinstance(view, TrainView):
        assert draws is not None, "a training view's request carries its draws"
        return torch.stack([view(image, draw) for image, draw in zip(images, draws, strict=True)])
    per_image = [view(image) for image in images]
    out = []
    for k in range(view.count):
        column = [views[k] for views in per_image]
        same = all(v.shape == column[0].shape for v in column)
        out.append(torch.stack(column) if same else column)
    return out


def _to(views: Views, device: torch.device) -> Views:
    if isinstance(views, torch.Tensor):
        return views.to(device, non_blocking=True)
    return [_to(v, device) for v in views]


def _same(batch: object) -> object:
    return batch


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group; the main process handles it (checkpoint, then exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
