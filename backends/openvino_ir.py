"""Saving OpenVINO IR (xml + bin) with the system's reason when a write fails. No torch here: the INT8 child
(`resdsl.nncf_quantize`) saves its IR with it too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from resdsl.backends import writing

# the INT8 child's exit status when it could not write its IR; its last stderr line is then the system's reason
WRITE_FAILED_STATUS = 3
_CHUNK = 1 << 20
XML_BYTES_PER_OP = 4096  # an op's layer, ports and edges in the xml: about 550 bytes in ResNet-50-D's IR


def save(openvino: ModuleType, model: Any, path: Path) -> None:
    """`openvino.save_model` without fp16 compression; a write that fails is WriteFailed with the system's reason.

    OpenVINO's serializer reports every failed write as "basic_ios::clear: iostream error", and removes what it
    wrote. Writing as many bytes as the IR's weights and (generously) its xml beside it finds what the system says
    (a full disk, a quota); if that write succeeds, the serializer's own error stands."""
    try:
        # compress_to_fp16 defaults to True: it would halve the fp32 weights' precision
        openvino.save_model(model, str(path), compress_to_fp16=False)
    except RuntimeError:
        ops = model.get_ordered_ops()
        weights = sum(op.get_byte_size() for op in ops if op.get_type_name() == "Constant")
        with writing():
            _write_zeros(path.with_name(f".{path.name}.probe"), weights + XML_BYTES_PER_OP * len(ops))
        raise


def _write_zeros(path: Path, size: int) -> None:
    """Write `size` zero bytes to `path` and flush them to the disk, then remove it (also when that fails)."""
    try:
        with path.open("wb") as probe:
            for start in range(0, size, _CHUNK):
                probe.write(bytes(min(_CHUNK, size - start)))
            probe.flush()
            os.fsync(probe.fileno())
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
