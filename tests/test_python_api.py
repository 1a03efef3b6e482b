"""The Python API of what the commands do: `resdsl.build` and `resdsl.evaluate` without the CLI, the examples of
docs/python-api.md run as written, and the backend records against pyproject.toml's extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import modules_imported_by

import resdsl
from resdsl.backends import BACKENDS, fold, reparam

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "python-api.md"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def doc_examples() -> list[str]:
    """The ```python blocks of the doc that follow a `<!-- tested -->` line."""
    return re.findall(r"<!-- tested -->\n```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("code", doc_examples(), ids=lambda code: code.splitlines()[-1][:40])
def test_the_docs_examples_run_as_written(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if "fashion-mnist" in code and not FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST is not installed here (Debian package dataset-fashion-mnist)")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})


def test_the_doc_has_an_example_of_each_function():
    examples = "\n".join(doc_examples())
    assert all(f"resdsl.{name}(" in examples for name in ("build", "evaluate", "train"))


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics and affine parameters drawn at random, so folding them is not an identity."""
    generator = torch.Generator().manual_seed(4)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data = 0.5 * torch.randn(tensor.shape, generator=generator)
            module.running_var.data = 0.5 + torch.rand(module.running_var.shape, generator=generator)
    return model.eval()


def test_build_of_cifar20_to_onnx_gives_the_pytorch_modules_output(tmp_path: Path):
    import onnxruntime

    model = randomised(resdsl.compile("cifar20").to_torch(seed=1))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    result = resdsl.build("cifar20", backend="onnx", output=tmp_path / "c20.onnx", weights=tmp_path / "w.pt",
                          batch=3)
    assert result.path == tmp_path / "c20.onnx" and result.files == [tmp_path / "c20.onnx"]
    assert result.size == (tmp_path / "c20.onnx").stat().st_size and result.verified and result.folded
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()
    assert result.errors["max_rel"] <= 1e-4 and result.errors["cosine"] >= 0.99999


@pytest.mark.parametrize(("arguments", "message"), [
    ({"backend": "onnnx"},
     "--backend must be one of pytorch, export, onnx, torchscript, tensorrt, openvino, not 'onnnx'"),
    ({"precision": "bf16"}, "the onnx backend builds fp32 or fp16, not bf16"),
    ({"batch": 0}, "--batch must be at least 1, not 0"),
    ({"batch": (8, 4, 16)}, "--dynamic-batch needs 1 <= MIN <= OPT <= MAX with MIN < MAX, not '8:4:16'"),
    ({"std": [0.5, 0.0, 0.5]}, "--std values must be positive, not '0.5,0,0.5'"),
    ({"input_shape": (3, 32)}, "--input takes CxHxW, three positive whole numbers such as 3x64x64, not (3, 32)"),
])
def test_build_refuses_a_bad_argument_with_a_usage_error(tmp_path: Path, arguments: dict, message: str):
    options = {"backend": "onnx", "output": tmp_path / "c20.onnx", **arguments}
    with pytest.raises(resdsl.UsageError, match=re.escape(message)):
        resdsl.build("cifar20", **options)
    assert list(tmp_path.iterdir()) == []


def test_a_build_that_fails_verification_raises_build_error_and_leaves_nothing(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    fold_batchnorm = fold.fold_batchnorm

    def wrong_fold(model: torch.nn.Module) -> torch.nn.Module:
        model = fold_batchnorm(model)
        with torch.no_grad():
            next(model.parameters()).mul_(1.01)
        return model

    monkeypatch.setattr(reparam, "fold_batchnorm", wrong_fold)  # what build's re-parameterisation calls
    with pytest.raises(resdsl.BuildError, match="the onnx artifact failed verification: max rel err"):
        resdsl.build("cifar20", backend="onnx", output=tmp_path / "c20.onnx")
    assert list(tmp_path.iterdir()) == []


def test_import_resdsl_and_its_command_functions_load_no_torch_numpy_or_networkx():
    code = "import resdsl; resdsl.build, resdsl.evaluate, resdsl.compile('resnet152')"
    assert modules_imported_by(code, ("torch", "numpy", "networkx"))[1] == []


def test_each_backends_packages_are_what_its_extra_installs_in_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for backend in BACKENDS.values():
        requirements = {re.split(r"[<>=\[ ]", r)[0].lower() for r in extras[backend.extra]}
        # TensorRT itself comes with torch-tensorrt
        assert {package.lower() for _, package in backend.modules} - {"tensorrt"} <= requirements, backend.name


def test_a_missing_backend_package_names_the_backends_extra():
    from resdsl.cli.app import _missing_extra

    missing = ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert (_missing_extra(missing, ["build", "cifar20", "--backend", "onnx"])
            == "resdsl build needs onnxruntime: pip install 'resdsl[onnx]'")
    torch_missing = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert (_missing_extra(torch_missing, ["bench", "cifar20", "--backend", "tensorrt"])
            == "resdsl bench needs torch: pip install 'resdsl[tensorrt]'")
