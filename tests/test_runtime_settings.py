"""The CPU runtimes' settings that resdsl loads artifacts with: waiting threads that sleep (onnxruntime) and threads
not pinned to cores (OpenVINO). They change the time on a shared CPU, never the outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.backends import BatchProfile, load_backend

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture
def built(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, Path, torch.Tensor, torch.Tensor]:
    """The cifar20 artifact of the backend the test names, a batch, and the module's outputs for it."""
    backend = request.param
    model = resdsl.compile(SPECS / "cifar20.res").to_torch(seed=0).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    out = tmp_path / ("model.onnx" if backend == "onnx" else "model.xml")
    load_backend(backend).build(model, x, out, batch=BatchProfile(2, 2, 2), expected=expected, metadata={})
    return backend, out, x, expected


@pytest.mark.parametrize("built", ["onnx"], indirect=True)
def test_onnxruntime_sessions_sleep_instead_of_spinning_with_the_module_s_outputs(built, monkeypatch) -> None:
    import onnxruntime

    backend, path, x, expected = built
    spinning = []
    session = onnxruntime.InferenceSession

    def recording_session(model, options, **kwargs):
        spinning.append(options.get_session_config_entry("session.intra_op.allow_spinning"))
        return session(model, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording_session)
    actual = load_backend(backend).load(path, "cpu")(x)
    assert spinning == ["0"]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("built", ["openvino"], indirect=True)
def test_openvino_threads_are_not_pinned_and_outputs_are_the_module_s(built, monkeypatch) -> None:
    import openvino

    backend, path, x, expected = built
    pinned = []

    compile_model = openvino.Core.compile_model

    def recording(core, model, device, config):
        compiled = compile_model(core, model, device, config)
        pinned.append(compiled.get_property("ENABLE_CPU_PINNING"))
        return compiled

    monkeypatch.setattr(openvino.Core, "compile_model", recording)  # resdsl keeps one Core for the process
    actual = load_backend(backend).load(path, "cpu")(x)
    assert pinned == [False]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
