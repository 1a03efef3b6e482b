"""Readers for the on-disk formats: CIFAR python pickle batches and idx files (gzipped or not).

Sizes are checked before anything is allocated: an idx file holds exactly what its header promises
(a gzip file is inflated no further than that, so a gzip bomb is refused early), and no array may
exceed MAX_BYTES.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from resdsl.data.locate import DataError

# The only globals a CIFAR batch needs: numpy arrays (and, in protocol 2 pickles written by
# Python 3, `_codecs.encode` for their bytes). Anything else in the pickle is refused.
PICKLE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


MAX_BYTES = 4 << 30  # the largest array read: far above MNIST-style sets (47 MB) and CIFAR (184 MB)
CIFAR_BATCH_BYTES = 200 << 20  # a CIFAR batch file is 31 MB (CIFAR-10) or 155 MB (CIFAR-100 train)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 N x 3 x 32 x 32) and labels (int64 N) of one CIFAR python batch file."""
    if not _there(path, "a CIFAR batch"):
        raise DataError(f"{path} is missing; the CIFAR batch directory must hold all of its batch files")
    if path.stat().st_size > CIFAR_BATCH_BYTES:
        raise DataError(f"{path} is {path.stat().st_size:,} bytes; a CIFAR batch file is at most "
                        f"{CIFAR_BATCH_BYTES:,} (CIFAR-100's train file is 155 MB)")
    try:
        with path.open("rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as error:
        raise DataError(f"{path} is not a readable CIFAR batch ({error or type(error).__name__})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR batch: it lacks the keys b'data' and {label_key!r}")
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} is not a CIFAR batch: b'data' must be a uint8 array of N rows of 3072 bytes")
    try:
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (len(data),) or ((labels < 0) | (labels >= classes)).any():
        raise DataError(f"{path} is not a CIFAR batch: it needs one label in 0..{classes - 1} per image")
    images = torch.from_numpy(np.ascontiguousarray(data)).reshape(-1, 3, 32, 32)
    return images, labels


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """The uint8 array stored in an idx file (`path`, or `path`.gz), which must have `ndim` dimensions."""
    name = idx_file(path)
    gzipped = name != path
    try:
        with (gzip.open(name, "rb") if gzipped else name.open("rb")) as file:
            return _read_idx(file, name, ndim)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{name} is not a readable {'gzip' if gzipped else 'idx'} file ({error})") from None


def idx_file(path: Path) -> Path:
    """The file an idx array is read from: `path`, else `path`.gz (DataError if neither is there)."""
    gz = path.with_name(path.name + ".gz")
    name = path if _there(path, "an idx file") else gz if _there(gz, "a gzipped idx file") else None
    if name is None:
        raise DataError(f"{path} (or {path.name}.gz) is missing; the idx directory must hold all four idx files")
    return name


def _there(path: Path, what: str) -> bool:
    """Whether the data file `path` is there; DataError if something else than a regular file (a pipe, a folder)
    is there, which is never opened."""
    if not path.exists():
        return False
    if not path.is_file():
        raise DataError(f"{path} is not a regular file, so it is not {what}")
    return True


def _read_idx(file: io.BufferedIOBase, name: Path, ndim: int) -> torch.Tensor:
    """Header, then exactly the promised bytes: never more than the header promises is read or inflated."""
    header = file.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim or header[:3] != b"\x00\x00\x08" or header[3] != ndim:
        raise DataError(f"{name} is not an idx file of unsigned bytes with {ndim} dimension(s): it must start "
                        f"with the bytes 00 00 08 0{ndim} and {ndim} big-endian sizes")
    dims = struct.unpack(f">{ndim}I", header[4:])
    size = math.prod(dims)
    if size > MAX_BYTES:
        raise DataError(f"{name}'s header promises {'x'.join(map(str, dims))} = {size:,} bytes, more than the "
                        f"{MAX_BYTES:,} an idx dataset may hold")
    data = bytearray(size)
    got = file.readinto(data)
    if got != size:
        raise DataError(f"{name} is truncated: its header promises {size:,} bytes of data, it holds {got:,}")
    if file.read(1):
        raise DataError(f"{name} is padded: it holds more than the {size:,} bytes of data its header promises")
    return torch.frombuffer(data, dtype=torch.uint8).reshape(dims) if size else torch.empty(dims, dtype=torch.uint8)


def read_idx_pair(images_path: Path, labels_path: Path, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 N x 1 x H x W) and labels (int64 N) of an idx image file and its label file."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1).long()
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{idx_file(labels_path)} holds {labels.shape[0]} labels for the {images.shape[0]} images "
                        f"of {idx_file(images_path)}")
    if labels.numel() and int(labels.max()) >= classes:
        raise DataError(f"{idx_file(labels_path)} holds label {int(labels.max())}, outside 0..{classes - 1}")
    return images.unsqueeze(1), labels
