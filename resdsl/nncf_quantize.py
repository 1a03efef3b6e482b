"""The child interpreter in which `resdsl build --int8` runs NNCF: `python -m resdsl.nncf_quantize PARENT_PID FP32_XML
OUT_XML CALIBRATION_NPZ` writes the INT8 IR of the fp32 IR at OUT_XML, calibrated on the batches saved in the .npz.

NNCF never runs in the caller's process: importing it patches torch (its torch part, which OpenVINO's converter
also imports whenever nncf is loaded) for the rest of that process's life. Here it sends no usage report either.
A failure prints one line on stderr and exits 1 (3 if the IR could not be written: the line is then the system's
reason); the child dies with its parent, so a parent killed or interrupted leaves no quantisation running.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parent, source, out, batches = argv
    end_with_parent(int(parent))
    # NNCF reports usage over the network from a forked process (and writes a client id into ~/intel) unless
    # openvino_telemetry is missing; without it NNCF falls back to its stub, which sends nothing.
    sys.modules["openvino_telemetry"] = None  # pyright: ignore[reportArgumentType]
    # NNCF quantises an OpenVINO model here. It tells a model's framework by importing each one it supports, which
    # costs more than the quantisation of a small net; kept out, torch and onnx cannot be asked.
    for framework in ("torch", "onnx"):
        sys.modules[framework] = None  # pyright: ignore[reportArgumentType]
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        import nncf
        import numpy as np
        import openvino

        from resdsl.backends import WriteFailed, openvino_ir

        with np.load(batches) as saved:
            calibration = [saved[name] for name in saved.files]
        model = openvino.Core().read_model(source)
        quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
        try:
            openvino_ir.save(openvino, quantized, Path(out))
        except WriteFailed as error:
            print(error, file=sys.stderr)
            return openvino_ir.WRITE_FAILED_STATUS
    except Exception as error:  # the parent shows this line; a traceback would mean nothing to its user
        message = str(error).strip().splitlines()
        print(message[0] if message else type(error).__name__, file=sys.stderr)
        return 1
    return 0


def end_with_parent(parent: int) -> None:
    """Have Linux kill this process when its parent ends (elsewhere the parent's own clean-up must do)."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
