"""metrics.jsonl, a run's log: one JSON object per line, written by `train`, read by `plot` (no torch).

Every record has `kind` ("train" or "eval"), `iteration`, `epoch`, `time` (Unix seconds) and
`elapsed` (seconds of training so far, over all resumes); `train` records add `lr`,
`train_loss`, `train_error` and `images_per_s`, `eval` records `test_error` and, with a
validation split, `val_error` (errors are fractions). Records of resdsl 0.1, without `kind`,
`time` and `elapsed`, are read too: their kind follows from their fields. Reading is bounded:
no more than MAX_LINE_BYTES of a line is held at once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from resdsl.files import atomic_write

KINDS = {
    "train": ("lr", "train_loss", "train_error", "images_per_s"),
    "eval": ("val_error", "test_error"),
}
COMMON = ("iteration", "epoch", "time", "elapsed")
MAX_LINE_BYTES = 64 * 1024
MAX_ITERATION = 2**63 - 1


def record(kind: str, iteration: int, epoch: float, elapsed: float, **values: float) -> dict:
    """A record of `kind` stamped with the wall-clock time, its keys in the documented order."""
    return {"kind": kind, "iteration": iteration, "epoch": round(epoch, 4), "time": round(time.time(), 3),
            "elapsed": round(elapsed, 3), **values}


def append(path: Path, entry: dict) -> None:
    """Add `entry` as one line at the end of `path`."""
    with path.open("a") as file:
        file.write(json.dumps(entry) + "\n")


def scalars(entry: dict) -> dict[str, float]:
    """The measured values of a record (what TensorBoard shows): its fields besides the common ones."""
    return {key: value for key, value in entry.items() if key not in COMMON and key != "kind"}


@dataclass(frozen=True)
class Line:
    """Line `number` of a metrics file: its record, or why it is not one (`problem`)."""

    number: int
    entry: dict | None
    problem: str | None = None
    complete: bool = True  # ends with a newline; a last line without one may still be being written


def lines(path: Path) -> Iterator[Line]:
    """Each non-blank line of `path` parsed, holding at most MAX_LINE_BYTES of a line (OSError if unreadable)."""
    with path.open("rb") as file:
        number = 0
        while raw := file.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                yield Line(number, None, f"a line longer than {MAX_LINE_BYTES // 1024} KiB")
                if not raw.endswith(b"\n"):
                    _skip_line(file)
                continue
            if not raw.strip():
                continue
            try:
                yield Line(number, parse(raw), complete=raw.endswith(b"\n"))
            except ValueError as error:
                yield Line(number, None, str(error), raw.endswith(b"\n"))


def parse(raw: bytes) -> dict:
    """One line as a record, checked and given its kind; ValueError saying what is wrong with it."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not text (binary data)") from None
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    except ValueError:  # an integer of thousands of digits
        raise ValueError("a number too long to read") from None
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    iteration = entry.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 <= iteration <= MAX_ITERATION:
        raise ValueError("no 'iteration' (a whole number of steps)")
    kind = entry.get("kind") or ("train" if "train_error" in entry else "eval")
    if kind not in KINDS:
        raise ValueError(f"an unknown kind '{kind}'")
    for key in (*COMMON[1:], *KINDS[kind]):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"'{key}' is not a finite number")
        if key.endswith("_error") and not 0 <= value <= 1:
            raise ValueError(f"'{key}' is not an error rate between 0 and 1")
    return {**entry, "kind": kind}


def keep_until(path: Path, iteration: int, warn) -> None:
    """Drop the records after `iteration` (logged by a run killed after its last checkpoint) and unreadable lines.

    `warn(message)` is told about each unreadable line dropped. The file is rewritten atomically.
    """
    if not path.exists():
        return
    with atomic_write(path) as out:
        for line in lines(path):
            if line.entry is None:
                warn(f"{path}:{line.number}: dropped a line that is not a metrics record ({line.problem})")
            elif line.entry["iteration"] <= iteration:
                _write_line(out, line.entry)


def _write_line(out: BinaryIO, entry: dict) -> None:
    out.write((json.dumps(entry) + "\n").encode())


def _skip_line(file: BinaryIO) -> None:
    """Read past the rest of an overlong line."""
    while (chunk := file.readline(MAX_LINE_BYTES)) and not chunk.endswith(b"\n"):
        pass
