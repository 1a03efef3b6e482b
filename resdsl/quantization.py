"""Post-training INT8 quantisation of an OpenVINO artifact (`resdsl build --int8`), gated on held-out accuracy.

NNCF calibrates the fp32 IR on images drawn from DATA's training split; the fp32 and the INT8 artifact then
classify images spread evenly over DATA's test split (val/ for an image folder, which lists its images class by
class), and the build refuses an INT8 artifact
whose top-1 error is worse than the fp32 one's by more than a threshold. The images are cut to the network's
input (an image folder's centre view, as `resdsl eval` cuts it; a tensor dataset's centre crop) and fed in the
artifact's input format. NNCF runs in a child interpreter (resdsl.nncf_quantize), never in this process. Nothing
here prints or exits: bad arguments raise UsageError, missing data DataError, a failed quantisation
QuantizationFailed.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resdsl.resolve import UsageError

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike

    from resdsl.backends import BatchProfile
    from resdsl.backends.preprocess import InputContract
    from resdsl.data import Dataset
    from resdsl.network import Network
    from resdsl.weights import Weights

CALIBRATION_IMAGES = 300  # NNCF's default subset size
HELDOUT_IMAGES = 1000
MAX_DROP = 1.0  # points of top-1 error the INT8 artifact may lose against the fp32 one


@dataclass(frozen=True)
class Quantization:
    """An INT8 build's data (`--calibration`: its training and test splits) and accuracy gate (`--int8-max-drop`,
    `--int8-images`)."""

    train: Dataset
    test: Dataset
    max_drop: float
    images: int


@dataclass(frozen=True)
class Int8Accuracy:
    """The top-1 error (0-1) of the fp32 and INT8 artifacts on `images` held-out images of `split`, the share of
    those images on which their top-1 classes agree, and how many training images calibrated the INT8 one."""

    dataset: str
    split: str
    calibration_images: int
    images: int
    fp32_error: float
    int8_error: float
    agreement: float

    @property
    def change(self) -> float:
        """The INT8 artifact's top-1 error minus the fp32 one's, in points (percent), from the counts of images each
        got wrong: 100 * (397/1000 - 387/1000) is 1.0000000000000009, over a --int8-max-drop of 1."""
        wrong = round(self.int8_error * self.images) - round(self.fp32_error * self.images)
        return 100 * wrong / self.images

    def describe(self) -> str:
        return (f"top-1 error on {self.images:,} {self.split} images of {self.dataset}, evenly spaced: fp32 "
                f"{100 * self.fp32_error:.2f}%, int8 {100 * self.int8_error:.2f}% ({self.change:+.2f} points); "
                f"top-1 agrees on {100 * self.agreement:.2f}%; calibrated on {self.calibration_images:,} training "
                "images")

    def failure(self, max_drop: float) -> str | None:
        """Why the INT8 artifact is too inaccurate (the figures), or None."""
        if self.change <= max_drop:
            return None
        return (f"its top-1 error is {100 * self.int8_error:.2f}% against the fp32 artifact's "
                f"{100 * self.fp32_error:.2f}% on {self.images:,} {self.split} images of {self.dataset}, "
                f"{self.change:+.2f} points, more than the --int8-max-drop of {max_drop:g}")


def check_options(backend: str, int8: bool, calibration: str | Path | None, max_drop: float, images: int) -> None:
    """UsageError, one sentence, for INT8 options that do not go together."""
    if not int8:
        if calibration is not None:
            raise UsageError("--calibration gives the images --int8 calibrates on; it goes with --int8")
        return
    if backend != "openvino":
        raise UsageError(f"--int8 quantises OpenVINO IR with NNCF: build with --backend openvino, not {backend}")
    if calibration is None:
        raise UsageError("--int8 needs --calibration DATA, the dataset (as resdsl eval's --data) whose training "
                         "images calibrate it and whose test images check it")
    if not math.isfinite(max_drop):
        raise UsageError(f"--int8-max-drop takes a number of points of top-1 error, not {max_drop}")
    if images < 1:
        raise UsageError(f"--int8-images must be at least 1, not {images}")


class QuantizationFailed(Exception):
    """NNCF's child process failed: one sentence saying how."""


def require() -> None:
    """BackendUnavailable, saying how to install it, when nncf does not import here."""
    from importlib.util import find_spec

    from resdsl.backends import BackendUnavailable

    if find_spec("nncf") is None:
        raise BackendUnavailable("--int8 needs nncf, which is not installed here: pip install 'resdsl[int8]'")


def quantize(source: Path, out: Path, calibration: Sequence[ArrayLike]) -> list[str]:
    """INT8 IR at `out` from the fp32 IR at `source`: NNCF's post-training quantisation, calibrated on the batches
    of `calibration` (the artifact's input: CPU tensors or arrays), run in a child interpreter; returns the files
    written, the main one first. The batches go to it in a temporary .npz beside `out`; an interrupt here ends the
    child."""
    import numpy as np

    from resdsl.backends import WriteFailed, openvino_ir, writing

    with tempfile.TemporaryDirectory(prefix=".resdsl-int8-", dir=out.parent) as folder:
        batches = Path(folder) / "calibration.npz"
        with writing():  # a full disk is the build's "cannot write", as the artifact's own files would be
            np.savez(batches, *(np.asarray(x) for x in calibration))
        # -P: the working folder is not put first on sys.path, where a user's nncf.py would shadow NNCF
        command = [sys.executable, "-P", "-m", "resdsl.nncf_quantize", str(os.getpid()), str(source), str(out),
                   str(batches)]
        child = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, errors="replace", check=False)  # run() kills the child on an interrupt
    said = child.stderr.strip().splitlines()
    if child.returncode == openvino_ir.WRITE_FAILED_STATUS and said:
        raise WriteFailed(said[-1])
    if child.returncode != 0:
        raise QuantizationFailed(f"NNCF's INT8 quantisation {failure(child.returncode, said)}")
    return [out.name, out.with_suffix(".bin").name]


def failure(status: int, said: list[str]) -> str:
    """How the child ended: killed by a signal, else with the last line it wrote on stderr (its error)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"process was killed by {name}"
    return f"failed: {said[-1]}" if said else f"process ended with exit status {status}"


def datasets(network: Network, saved: Weights | None, data: str | Path,
             dataset: str | None = None) -> tuple[Dataset, Dataset]:
    """DATA's training and test splits of `dataset` (`--dataset`), else of the one the weights (else the spec's
    recipe) were trained on."""
    from resdsl.data import DataError, find_data, load_dataset
    from resdsl.evaluation import recipe_of

    recipe = recipe_of(network, saved.checkpoint if saved is not None else {}, {}, dataset)
    try:
        root = find_data(recipe.dataset, Path(data))
    except DataError as error:
        if dataset is not None:
            raise
        raise DataError(f"{error} (INT8 is calibrated on {recipe.dataset}, {network.name}'s recipe's dataset; "
                        "name the dataset DATA holds with --dataset)") from None
    return load_dataset(recipe.dataset, root, train=True), load_dataset(recipe.dataset, root, train=False)


def calibration_batches(train: Dataset, network: Network, contract: InputContract, batch: BatchProfile, seed: int,
                        count: int = CALIBRATION_IMAGES) -> list[torch.Tensor]:
    """`count` training images drawn at random (seeded), as batches of the artifact's input it takes."""
    import torch

    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    return [padded(artifact_input(contract, images), batch)
            for images, _ in views(train.subset(chosen), network, batch.max)]


def accuracy(fp32: Path, int8: Path, test: Dataset, network: Network, contract: InputContract, batch: BatchProfile,
             calibration_images: int, images: int = HELDOUT_IMAGES) -> Int8Accuracy:
    """Top-1 errors of the two IR files on `images` test images spread evenly over the split (an image folder's
    val/ lists its images class by class), and their agreement."""
    import torch

    from resdsl.backends.openvino import load

    count = min(images, len(test))
    held_out = test.subset(torch.arange(count) * len(test) // count)
    runs = {"fp32": load(fp32, "cpu"), "int8": load(int8, "cpu")}
    predicted: dict[str, list[torch.Tensor]] = {name: [] for name in runs}
    labels = []
    for pixels, truth in views(held_out, network, batch.max):
        x = padded(artifact_input(contract, pixels), batch)
        for name, run in runs.items():
            predicted[name].append(run(x)[:len(truth)].argmax(1))
        labels.append(truth)
    truth = torch.cat(labels)
    fp32_top1, int8_top1 = (torch.cat(predicted[name]) for name in runs)
    n = len(truth)
    return Int8Accuracy(test.name, "val" if test.shape is None else "test", calibration_images, n,
                        fp32_error=int((fp32_top1 != truth).sum()) / n, int8_error=int((int8_top1 != truth).sum()) / n,
                        agreement=int((fp32_top1 == int8_top1).sum()) / n)


def views(dataset: Dataset, network: Network, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images cut to the network's input, labels) in batches of `batch`, in order; DataError if the images
    cannot be cut to it."""
    from resdsl.data import DataError, Loader
    from resdsl.data.views import EvalView

    channels, height, width = network.input_shape
    folder = dataset.shape is None
    if folder:
        if height != width:
            raise DataError(f"an image folder's views are square, and {network.name} takes {height}x{width} images")
        dataset = dataset.sized(height)
    shape = dataset.shape
    assert shape is not None  # sized above
    if shape[0] != channels or shape[1] < height or shape[2] < width:
        raise DataError(f"{dataset.name}'s images are {'x'.join(map(str, shape))}, and {network.name} takes "
                        f"{'x'.join(map(str, network.input_shape))}: they cannot calibrate or check it")
    loader = Loader(dataset, batch, shuffle=False, drop_last=False, view=EvalView("center", height) if folder else None)
    for images, labels in loader:
        if folder:
            yield images[0], labels
        else:
            top, left = (shape[1] - height) // 2, (shape[2] - width) // 2
            yield images[..., top:top + height, left:left + width], labels


def padded(x: torch.Tensor, batch: BatchProfile) -> torch.Tensor:
    """`x` with its first image repeated up to the artifact's batch when it has fewer images than it takes."""
    import torch

    return torch.cat([x, x[:1].expand(batch.max - len(x), *x.shape[1:])]) if len(x) < batch.min else x


def artifact_input(contract: InputContract, images: torch.Tensor) -> torch.Tensor:
    """uint8 `images` in the format the artifact takes: as they are, in 0-1, or normalised for raw input."""
    from resdsl.backends.preprocess import InputContract

    if contract.format == "uint8":
        return images
    x = images.float() / 255
    return InputContract("float", contract.normalization).prepare(x) if contract.format == "raw" else x
