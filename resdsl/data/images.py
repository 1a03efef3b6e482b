"""Image folders: listing class sub-folders, and decoding one file to a uint8 tensor (torchvision, else PIL).

torchvision.io decodes with libjpeg-turbo on the CPU and, given a CUDA device, with nvjpeg in batches
(`decode_on_device`). PIL is the fallback for files or installs torchvision cannot handle.
"""

from __future__ import annotations

import importlib.util
import io
import os
import stat
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch

from resdsl.data.locate import DECODERS, DataError

EXTENSIONS = {".jpg", ".jpeg", ".png"}
EXTRA = "pip install 'resdsl[images]'"
JPEG_MAGIC = b"\xff\xd8"
MAX_PIXELS = 178_956_970  # where PIL refuses to decode (twice its Image.MAX_IMAGE_PIXELS)


class ImageFiles:
    """Image paths standing in for an image tensor: indexing selects files; views are `size` x `size`.

    `size` is the side of the square views the network sees (the recipe's crop); the loader decodes
    and crops the files in worker processes (see resdsl.data.folder).
    """

    def __init__(self, paths: Sequence[Path], size: int | None = None) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.size is None else (len(self.paths), 3, self.size, self.size)

    def __getitem__(self, index: torch.Tensor | slice) -> ImageFiles:
        if isinstance(index, slice):
            return ImageFiles(self.paths[index], self.size)
        return ImageFiles([self.paths[i] for i in index.tolist()], self.size)

    def sized(self, size: int) -> ImageFiles:
        return ImageFiles(self.paths, size)


@cache
def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


@cache
def has_pillow() -> bool:
    return importlib.util.find_spec("PIL") is not None


def check_decoder(decoder: str, device: torch.device) -> None:
    """Raise DataError (one sentence) if `decoder` cannot run here."""
    if decoder not in DECODERS:
        raise DataError(f"unknown decoder '{decoder}'; choose one of {', '.join(DECODERS)}")
    if decoder in ("torchvision", "nvjpeg") and not has_torchvision():
        raise DataError(f"the {decoder} decoder needs torchvision: {EXTRA}")
    if decoder == "nvjpeg" and device.type != "cuda":
        raise DataError("the nvjpeg decoder decodes on a CUDA GPU, and this run's device is the CPU")
    if decoder == "pil" and not has_pillow():
        raise DataError(f"the pil decoder needs Pillow: {EXTRA}")
    if decoder == "auto" and not has_torchvision() and not has_pillow():
        raise DataError(f"reading image folders needs torchvision or Pillow: {EXTRA}")


def check_named_decoder(decoder: str, device: torch.device) -> None:
    """A decoder named by --decoder is refused where it cannot run, whatever the data; `auto` only where images
    are decoded (check_decoder)."""
    if decoder != "auto":
        check_decoder(decoder, device)


def read_file(path: Path) -> torch.Tensor:
    """The bytes of `path` as a 1-D uint8 tensor; DataError if it is not a regular file (a pipe is never waited on)."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise DataError(f"{path} is not a regular file, so it is not an image")
            raw = file.read()
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error.strerror or error})") from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)


def decode(path: Path, raw: torch.Tensor, decoder: str) -> torch.Tensor:
    """The image in `raw` (the bytes of `path`) as uint8 3 x H x W RGB; DataError if it is not one, or too large."""
    _check_pixels(path, raw)
    if decoder != "pil" and has_torchvision():
        try:
            return _decode_torchvision(raw)
        except RuntimeError:
            pass  # a format or variant libjpeg-turbo/libpng refuse: PIL may still read it
    return _decode_pil(path, raw)


def decode_on_device(paths: Sequence[Path], raws: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEGs decoded together on `device` (nvjpeg on a GPU); other files, or a batch nvjpeg refuses, on the CPU."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpegs = [i for i, raw in enumerate(raws) if bytes(raw[:2].tolist()) == JPEG_MAGIC]
    out: list[torch.Tensor | None] = [None] * len(raws)
    if jpegs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = decode_jpeg([raws[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, decoded, strict=True):
                out[i] = image
        except RuntimeError:
            pass
    return [image if image is not None else decode(paths[i], raws[i], "auto").to(device)
            for i, image in enumerate(out)]


def _check_pixels(path: Path, raw: torch.Tensor) -> None:
    """Refuse an image whose header promises more than MAX_PIXELS, before decoding allocates it."""
    if not has_pillow():
        return
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw.numpy().data)) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:  # PIL's own limit, the same unless a program changed it
        width, height = MAX_PIXELS + 1, 1
    except Exception:
        return  # not an image PIL knows: the decoder says what is wrong with it
    if width * height > MAX_PIXELS:
        size = f"{width}x{height} pixels" if height > 1 else f"more than {MAX_PIXELS:,} pixels"
        raise DataError(f"{path} is {size}; resdsl decodes images of at most {MAX_PIXELS:,} pixels "
                        "(13,000 x 13,000), so that a decompression bomb cannot exhaust memory")


def _decode_torchvision(raw: torch.Tensor) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        return decode_image(raw, mode=ImageReadMode.RGB)


def _decode_pil(path: Path, raw: torch.Tensor) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw.numpy().tobytes())) as image:
            pixels = np.asarray(image.convert("RGB"))
    except Image.UnidentifiedImageError:  # its message names the BytesIO object, not the file
        raise DataError(f"{path} is not a readable image: expected a JPEG or PNG file (its content is no image "
                        "format Pillow knows)") from None
    except Exception as error:
        reason = str(error) or type(error).__name__
        raise DataError(f"{path} is not a readable image: expected a JPEG or PNG file ({reason})") from None
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
        raise DataError(f"{root} has class folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                        "that the train folder lacks")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        # pipes, sockets and devices named like images are skipped: reading one could wait forever
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS and f.is_file()) \
            if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
    if not classes or not paths:
        raise DataError(f"{root} holds no .jpg, .jpeg or .png images in class sub-folders")
    return paths, labels, classes
