"""`DatasetRecord`: everything resdsl knows about one dataset, in one place (no torch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resdsl.data.dataset import Dataset


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset: where its files are, how to get them, what they hold and how to read them.

    `load(record, root, train)` reads the train or test split from `root`, the directory holding the files.
    """

    name: str
    files: str  # which files hold it, in words, for the missing-data message
    markers: tuple[str, ...]  # a file or folder whose presence says a directory holds it
    subdirs: tuple[str, ...]  # where under a directory the files may be ("" is the directory itself)
    source: str  # where to get it, naming the directories searched "one of them"
    load: Callable[[DatasetRecord, Path, bool], Dataset]
    classes: int | None  # None: one class per folder
    # C, H, W of the published files (None: any size, cropped square). A recipe without an augment line crops
    # the images read whole, so a smaller copy in this format (as tests use) trains too.
    image_shape: tuple[int, int, int] | None
    package: str | None = None  # the Debian package that installs it
    system_copy: Path | None = None  # where that package puts it
    aliases: tuple[str, ...] = ()  # other names a spec may give it

    def how_to_get(self) -> str:
        """What to do to get the files into the directories searched."""
        if self.package is None:
            return self.source
        return (f"install the Debian package with `sudo apt-get install {self.package}` (it puts them in "
                f"{self.system_copy}) or {self.source}")
