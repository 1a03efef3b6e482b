"""Image-folder datasets: class sub-folders of JPEG/PNG files, decoded with PIL only when a batch needs them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from resdsl.data.locate import DataError

EXTENSIONS = {".jpg", ".jpeg", ".png"}
CANVAS = 480


class ImageFiles:
    """Image paths standing in for an image tensor: indexing selects files, `decode()` reads them.

    Every image is decoded onto a square canvas: shorter side resized to `canvas`, centre
    crop; `Augment(scale=...)` then does the random rescale and crop, batched on tensors.
    """

    def __init__(self, paths: Sequence[Path], canvas: int = CANVAS) -> None:
        self.paths = list(paths)
        self.canvas = canvas

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.canvas, self.canvas)

    def __getitem__(self, index: torch.Tensor | slice) -> ImageFiles:
        if isinstance(index, slice):
            return ImageFiles(self.paths[index], self.canvas)
        return ImageFiles([self.paths[i] for i in index.tolist()], self.canvas)

    def decode(self) -> torch.Tensor:
        """The images as uint8 N x 3 x canvas x canvas."""
        out = torch.empty(self.shape, dtype=torch.uint8)
        for i, path in enumerate(self.paths):
            out[i] = decode_image(path, self.canvas)
        return out


def decode_image(path: Path, canvas: int) -> torch.Tensor:
    """One image file as uint8 3 x canvas x canvas: shorter side resized to `canvas`, centre crop."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (canvas, canvas))  # JPEG: decode at a reduced size that is still >= canvas
            image = image.convert("RGB")
            width, height = image.size
            scale = canvas / min(width, height)
            width, height = max(canvas, round(width * scale)), max(canvas, round(height * scale))
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            left, top = (width - canvas) // 2, (height - canvas) // 2
            image = image.crop((left, top, left + canvas, top + canvas))
            pixels = np.asarray(image)
    except Exception as error:
        raise DataError(f"{path} is not a readable image ({error or type(error).__name__})") from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def list_folder(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The image paths under root/<class>/, their class indices (sorted class names), and the class names."""
    if not root.is_dir():
        raise DataError(f"{root} is missing; an image folder needs train/<class>/ and val/<class>/ sub-folders")
    found = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folder(s) {', '.join(unknown)} that the train folder lacks")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    if not classes or not paths:
        raise DataError(f"{root} holds no .jpg, .jpeg or .png images in class sub-folders")
    return paths, labels, classes
