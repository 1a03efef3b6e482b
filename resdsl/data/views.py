"""What the network sees of an image: the paper's training view and its three testing protocols.

All views work on uint8 C x H x W tensors (any device) with antialiased bilinear resizing:
- training (section 3.4): the shorter side resized to a random integer in [low, high], a random
  `crop` x `crop` window of the result, mirrored with probability 1/2 (fb.resnet.torch's
  RandomScale + RandomCrop + HorizontalFlip; only the window is resized, not the whole image);
- `center`: the shorter side resized to 256/224 x crop, the centre crop;
- `10crop`: the four corner crops and the centre crop of that image, and their mirrors;
- `multiscale`: the whole image at each shorter side of {224, 256, 384, 480, 640} (scaled by crop/224),
  for the network to run on fully-convolutionally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from resdsl.data.locate import PROTOCOLS

TEST_SIDE = 256 / 224  # the testing resize: shorter side 256 for 224 crops
SCALES = (224, 256, 384, 480, 640)  # the paper's multi-scale testing sides, for 224 crops


@dataclass(frozen=True)
class TrainView:
    """Random-scale crop: shorter side in [scale[0], scale[1]], `crop` x `crop` window, optional mirror."""

    crop: int
    scale: tuple[int, int]
    flip: bool

    def draws(self, count: int, seed: tuple[int, ...]) -> np.ndarray:
        """Per image: shorter side, column and row fractions in [0, 1), mirror (0/1); from `seed` alone."""
        rng = np.random.default_rng(seed)
        sides = rng.integers(self.scale[0], self.scale[1] + 1, count)
        where = rng.random((count, 2))
        mirror = rng.random(count) < 0.5 if self.flip else np.zeros(count, dtype=bool)
        return np.column_stack([sides, where, mirror]).astype(np.float64)

    def __call__(self, image: torch.Tensor, draw: np.ndarray) -> torch.Tensor:
        side, across, down, mirror = float(draw[0]), float(draw[1]), float(draw[2]), bool(draw[3])
        height, width = image.shape[-2:]
        new_h, new_w = resized_size(height, width, int(side), exact=round)  # fb.resnet.torch's RandomScale rounds
        # the crop's top-left corner in the resized image, a uniform integer as in torch.random(0, W - crop)
        left = int(across * (new_w - self.crop + 1))
        top = int(down * (new_h - self.crop + 1))
        # the same window in the source image, rounded to whole pixels
        rows, cols = _window(top, self.crop, height, new_h), _window(left, self.crop, width, new_w)
        out = resize(image[:, rows, cols], (self.crop, self.crop))
        return out.flip(-1) if mirror else out


@dataclass(frozen=True)
class EvalView:
    """One of PROTOCOLS at crop size `crop`."""

    protocol: str
    crop: int

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown testing protocol '{self.protocol}'; choose one of {', '.join(PROTOCOLS)}")

    @property
    def count(self) -> int:
        """Views per image."""
        return {"center": 1, "10crop": 10, "multiscale": len(SCALES)}[self.protocol]

    def sides(self) -> list[int]:
        """The shorter sides the image is resized to (one per scale)."""
        if self.protocol == "multiscale":
            return [round(s * self.crop / 224) for s in SCALES]
        return [round(TEST_SIDE * self.crop)]

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The views of one image (3-D) or of a batch of equal-sized images (4-D)."""
        if self.protocol == "multiscale":
            return [resize_shorter(image, side) for side in self.sides()]
        resized = resize_shorter(image, self.sides()[0])
        if self.protocol == "center":
            return [centre_crop(resized, self.crop)]
        return ten_crop(resized, self.crop)


def resized_size(height: int, width: int, side: int, exact: Callable[[float], int] = int) -> tuple[int, int]:
    """(H, W) with the shorter side `side` and the aspect kept; the longer side truncated (`exact`), as
    torchvision's Resize does."""
    if width <= height:
        return exact(side * height / width), side
    return side, exact(side * width / height)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (or float) C x H x W or N x C x H x W resized to `size`, bilinear with antialiasing."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batch = image if image.dim() == 4 else image[None]
    if batch.dtype == torch.uint8 and batch.device.type != "cpu":  # uint8 resampling is a CPU kernel only
        out = F.interpolate(batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out if image.dim() == 4 else out[0]


def resize_shorter(image: torch.Tensor, side: int) -> torch.Tensor:
    return resize(image, resized_size(image.shape[-2], image.shape[-1], side))


def centre_crop(image: torch.Tensor, crop: int) -> torch.Tensor:
    """The centre `crop` x `crop` window, placed as torchvision's CenterCrop places it."""
    height, width = image.shape[-2:]
    top, left = round((height - crop) / 2), round((width - crop) / 2)
    return image[..., top:top + crop, left:left + crop]


def ten_crop(image: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """The five crops of the image, then the five of its mirror image (torchvision's TenCrop order)."""
    return _five_crop(image, crop) + _five_crop(image.flip(-1), crop)


def _five_crop(image: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops."""
    height, width = image.shape[-2:]
    return [image[..., :crop, :crop], image[..., :crop, width - crop:],
            image[..., height - crop:, :crop], image[..., height - crop:, width - crop:], centre_crop(image, crop)]


def _window(start: int, crop: int, extent: int, resized: int) -> slice:
    """Pixels start..start+crop of an axis resized from `extent` to `resized`, as a slice of the original axis."""
    size = min(extent, max(1, round(crop * extent / resized)))
    first = min(max(0, round(start * extent / resized)), extent - size)
    return slice(first, first + size)
