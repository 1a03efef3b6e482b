"""Batched augmentation on uint8 image tensors, on the batch's device: the paper's CIFAR and ImageNet recipes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# AlexNet's PCA of ImageNet's RGB pixels (in [0, 1] units), as fb.resnet.torch's datasets/imagenet.lua gives it:
# eigenvalues, and the eigenvectors as columns.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])


class Augment:
    """Scale to [0, 1], PCA lighting, subtract the mean (and divide by std), then random pad+crop or
    rescale+crop, and flip.

    The mean is subtracted before padding, so padded pixels are zero after normalisation.
    With `scale=(lo, hi)` (the paper's ImageNet recipe) each image's shorter side is resized
    to a random integer in [lo, hi] before the `crop`; evaluation resizes it to lo. Image
    folders arrive already cropped (resdsl.data.views), so only the photometric part is left.
    `lighting` is the standard deviation of AlexNet's PCA colour noise (0.1 in the paper).
    """

    def __init__(
        self,
        *,
        pad: int = 0,
        crop: int | None = None,
        flip: bool = False,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        scale: tuple[int, int] | None = None,
        lighting: float = 0.0,
    ) -> None:
        if pad < 0 or (crop is not None and crop < 1):
            raise ValueError(f"pad must be >= 0 and crop >= 1, not pad={pad}, crop={crop}")
        if scale is not None and (crop is None or not crop <= scale[0] <= scale[1]):
            raise ValueError(f"scale {scale} needs a crop no larger than its lower bound")
        self.pad, self.crop, self.flip, self.scale, self.lighting = pad, crop, flip, scale, lighting
        self.mean = None if mean is None else mean.float()
        self.std = None if std is None else std.float()

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random training views: float32 N x C x crop x crop (crop defaults to the image size)."""
        draw = _Draw(len(images), images.device, generator)
        alpha = draw.normal(3) * self.lighting if self.lighting else None
        x = self.normalize(images, alpha)
        flips = draw.uniform() < 0.5 if self.flip else torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.scale is not None and self.crop is not None:  # __init__ refuses a scale without a crop
            return self._rescale_crop(x, flips, draw, self.scale, self.crop)
        if not self.pad and not self.flip and self._crop_size(x) == tuple(x.shape[-2:]):
            return x
        return self._pad_crop(x, flips, draw)

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic view: normalised, resized to the lower scale bound if any, centre-cropped."""
        x = self.normalize(images)
        if self.scale is not None:
            height, width = x.shape[-2:]
            factor = self.scale[0] / min(height, width)
            size = (max(self.scale[0], round(height * factor)), max(self.scale[0], round(width * factor)))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        crop_h, crop_w = self._crop_size(x)
        top, left = (x.shape[-2] - crop_h) // 2, (x.shape[-1] - crop_w) // 2
        return x[..., top:top + crop_h, left:left + crop_w]

    def normalize(self, images: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 -> float32 in [0, 1], plus the PCA lighting of coefficients `alpha` (N x 3) if given,
        minus the mean, divided by std."""
        x = images.to(torch.float32).div_(255)  # in place from here: a batch of 224x224 images is 19 MB
        if alpha is not None:
            if x.shape[1] != 3:
                raise ValueError(f"PCA lighting needs RGB images, not {x.shape[1]} channel(s)")
            x.add_(pca_offsets(alpha.to(x.device))[:, :, None, None])
        if self.mean is not None:
            x -= _like(self.mean, x, "mean")
        if self.std is not None:
            x /= _like(self.std, x, "std")
        return x

    def _crop_size(self, x: torch.Tensor) -> tuple[int, int]:
        return (self.crop, self.crop) if self.crop is not None else (x.shape[-2], x.shape[-1])

    def _pad_crop(self, x: torch.Tensor, flips: torch.Tensor, draw: _Draw) -> torch.Tensor:
        n, channels = x.shape[:2]
        crop_h, crop_w = self._crop_size(x)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        height, width = x.shape[-2:]
        if crop_h > height or crop_w > width:
            raise ValueError(f"crop {crop_h}x{crop_w} is larger than the padded {height}x{width} images")
        top, left = draw.integers(height - crop_h + 1), draw.integers(width - crop_w + 1)
        ys, xs = torch.arange(crop_h, device=x.device), torch.arange(crop_w, device=x.device)
        rows = top[:, None] + ys
        cols = left[:, None] + torch.where(flips[:, None], crop_w - 1 - xs, xs)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(channels, device=x.device)[None, :, None, None]
        return x[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def _rescale_crop(self, x: torch.Tensor, flips: torch.Tensor, draw: _Draw, scale: tuple[int, int],
                      crop: int) -> torch.Tensor:
        n, channels, height, width = x.shape
        low, high = scale
        side = low + draw.integers(high - low + 1).float()
        window = crop * min(height, width) / side  # the crop's side in input pixels
        left, top = draw.uniform() * (width - window), draw.uniform() * (height - window)
        # affine_grid maps output [-1, 1] onto the window's edges in the input's [-1, 1] (align_corners=False)
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = torch.where(flips, -window / width, window / width)
        theta[:, 0, 2] = (2 * left + window) / width - 1
        theta[:, 1, 1] = window / height
        theta[:, 1, 2] = (2 * top + window) / height - 1
        grid = F.affine_grid(theta, [n, channels, crop, crop], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _Draw:
    """Per-image random numbers from `generator` (on its own device), moved to the batch's device."""

    def __init__(self, n: int, device: torch.device, generator: torch.Generator | None) -> None:
        self.n, self.device, self.generator = n, device, generator
        self.source = generator.device if generator is not None else device

    def uniform(self) -> torch.Tensor:
        return torch.rand(self.n, generator=self.generator, device=self.source).to(self.device)

    def integers(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.n,), generator=self.generator, device=self.source).to(self.device)

    def normal(self, columns: int) -> torch.Tensor:
        return torch.randn(self.n, columns, generator=self.generator, device=self.source).to(self.device)


def pca_offsets(alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet's colour augmentation: the RGB offset sum_j alpha_j * eigval_j * eigvec_j added to every pixel
    of an image ([0, 1] units), for each row of `alpha` (N x 3, drawn from N(0, std))."""
    return (alpha * PCA_EIGVAL.to(alpha.device)) @ PCA_EIGVEC.to(alpha.device).T


def _like(stat: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """`stat` (C, or C x H x W) on x's device, shaped to broadcast over the batch.

    A per-pixel statistic meets images of another size only in multi-scale testing: it is resized to them.
    """
    stat = stat.to(x.device)
    if stat.dim() == 1 and stat.numel() == x.shape[1]:
        return stat.view(-1, 1, 1)
    if stat.dim() == 3 and stat.shape[0] == x.shape[1] and stat.shape[1:] != x.shape[2:]:
        return F.interpolate(stat[None], size=tuple(x.shape[2:]), mode="bilinear", antialias=True,
                             align_corners=False)[0]
    if tuple(stat.shape) != tuple(x.shape[1:]):
        raise ValueError(f"{name} of shape {tuple(stat.shape)} does not fit images of shape {tuple(x.shape[1:])}")
    return stat
