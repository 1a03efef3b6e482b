"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

CLASSES = 10


def write_image_folder(root: Path, per_class: dict[str, int], suffix: str = ".JPEG", seed: int = 0) -> Path:
    """An ImageNet-layout folder (split/<wnid>/<n>.JPEG) of small images whose colour says their class.

    Sizes vary (40 to 120 pixels a side, portrait and landscape) as ImageNet's do.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label in range(CLASSES):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                height, width = (int(v) for v in rng.integers(40, 121, 2))
                pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
                pixels[..., label % 3] += np.uint8(40 + 10 * label)
                # ramps across and down, so that crops and mirror images differ
                pixels[..., 0] += np.linspace(0, 80, width, dtype=np.uint8)[None, :]
                pixels[..., 1] += np.linspace(0, 60, height, dtype=np.uint8)[:, None]
                Image.fromarray(pixels).save(folder / f"{number}{suffix}")
    return root


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """`write_image_folder` into this test's temporary directory."""
    return lambda per_class, suffix=".JPEG": write_image_folder(tmp_path / "images", per_class, suffix)


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 training and 40 validation JPEGs in 10 classes."""
    return write_image_folder(tmp_path_factory.mktemp("jpegs"), {"train": 30, "val": 4})


@pytest.fixture(scope="session")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 training and 20 validation PNGs in 10 classes: lossless, so a test can decode them independently."""
    return write_image_folder(tmp_path_factory.mktemp("pngs"), {"train": 1, "val": 2}, suffix=".png")


@pytest.fixture(scope="session")
def sigkill_after_checkpoint() -> Callable[[int], str]:
    """A `python -c` program for an iteration: `resdsl ...` (its argv) that dies by SIGKILL right after writing
    the checkpoint of that iteration, as a crash or an OOM killer would leave a run."""
    return _KILLED_AFTER.format


_KILLED_AFTER = """
import os, signal, sys
from resdsl.train import checkpoint
from resdsl.cli.app import main
save = checkpoint.save
def save_then_die(path, state):
    save(path, state)
    if state["iteration"] == {}:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
sys.argv[0] = "resdsl"
main()
"""
