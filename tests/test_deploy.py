"""`resdsl build`: artifacts run outside resdsl (onnxruntime, torch.export.load, torch.jit.load) and match
an independent PyTorch module carrying the same --weights (torchvision's for the torchvision specs), fed
images prepared by hand as training prepares them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from typer.testing import CliRunner

import resdsl
from resdsl.backends import BatchProfile
from resdsl.backends.fold import fold_batchnorm
from resdsl.backends.preprocess import InputContract, Normalization, bake
from resdsl.cli.app import app

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"
CIFAR20 = str(SPECS / "cifar20.res")
RESNET18 = str(SPECS / "torchvision" / "resnet18.res")
RESNEXT50 = str(SPECS / "torchvision" / "resnext50_32x4d.res")
SMALL = (3, 64, 64)


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def randomised(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding and --weights are visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.3, 0.3)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def checkpoint(tmp_path: Path, model: torch.nn.Module, bare: bool = False) -> Path:
    path = tmp_path / "weights.pt"
    state = model.state_dict()
    torch.save(state if bare else {"model": state, "step": 7}, path)
    return path


def batch(n: int = 2, shape: tuple[int, ...] = SMALL) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(3))


def assert_close_relative(actual, expected, tolerance: float = 1e-4) -> None:
    actual, expected = torch.as_tensor(np.asarray(actual)), torch.as_tensor(np.asarray(expected))
    assert actual.shape == expected.shape
    error = (actual - expected).abs().max().item() / expected.abs().max().item()
    assert error <= tolerance, f"relative error {error:.2e}"


def onnx_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def build(*args: str) -> str:
    result = run("build", *args)
    assert result.exit_code == 0, result.output
    return result.output


def images(n: int = 3, shape: tuple[int, ...] = (3, 32, 32)) -> torch.Tensor:
    """Random uint8 images, as a dataset stores them."""
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))


def onnx_metadata(path: Path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    reference = randomised(torchvision.models.resnet18())
    return checkpoint(tmp_path_factory.mktemp("r18"), reference), reference


@pytest.fixture(scope="module")
def cifar20_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = randomised(resdsl.compile(CIFAR20).to_torch(seed=5))
    return checkpoint(tmp_path_factory.mktemp("c20"), model), model


@pytest.fixture(scope="module")
def cifar20_mean_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """A resdsl training checkpoint of a mean-subtracting recipe: the model and the per-pixel mean image (0-1)."""
    model = randomised(resdsl.compile(CIFAR20).to_torch(seed=6))
    mean = 0.4 + 0.2 * torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(7))
    path = tmp_path_factory.mktemp("c20mean") / "last.pt"
    torch.save({"model": model.state_dict(), "mean": mean, "iteration": 10}, path)
    return path, model, mean


def test_onnx_resnet18_matches_torchvision_with_the_same_weights(resnet18_weights, tmp_path):
    weights, reference = resnet18_weights
    out = tmp_path / "r18.onnx"
    build(RESNET18, "--backend", "onnx", "-o", out, "--weights", weights, "--input", "3x64x64", "--batch", 2)
    x = batch()
    with torch.no_grad():
        assert_close_relative(onnx_outputs(out, x), reference(x))


def test_exported_program_resnet18_matches_torchvision_with_the_same_weights(resnet18_weights, tmp_path):
    weights, reference = resnet18_weights
    out = tmp_path / "r18.pt2"
    build(RESNET18, "--backend", "export", "-o", out, "--weights", weights, "--input", "3x64x64", "--batch", 2)
    x = batch()
    with torch.no_grad():
        assert_close_relative(torch.export.load(out).module()(x), reference(x))


def test_onnx_backbone_outputs_torchvisions_stage_features_by_name(resnet18_weights, tmp_path):
    weights, reference = resnet18_weights
    out = tmp_path / "backbone.onnx"
    build(RESNET18, "--backend", "onnx", "-o", out, "--weights", weights, "--input", "3x64x64", "--batch", 2,
          "--raw-input", "--features", "layer2,layer3,layer4")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["layer2", "layer3", "layer4"]
    x = batch()
    expected = IntermediateLayerGetter(reference, {"layer2": "layer2", "layer3": "layer3", "layer4": "layer4"})(x)
    for output, name in zip(session.run(None, {session.get_inputs()[0].name: x.numpy()}), expected, strict=True):
        assert_close_relative(output, expected[name].detach())


def test_unknown_feature_exits_2_with_a_suggestion(tmp_path):
    result = run("build", RESNET18, "--backend", "onnx", "-o", tmp_path / "b.onnx", "--features", "layer2,layr3")
    assert result.exit_code == 2
    assert "'layr3' is not a layer or group of resnet18; did you mean 'layer3'?" in result.output


def test_pytorch_artifact_state_dict_loads_into_torchvision(resnet18_weights, tmp_path):
    weights, reference = resnet18_weights
    out = tmp_path / "r18.pt2"
    build(RESNET18, "--backend", "pytorch", "-o", out, "--weights", weights, "--input", "3x64x64")
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.export.load(out).module().state_dict(), strict=True)
    x = batch()
    with torch.no_grad():
        assert_close_relative(model.eval()(x), reference(x), 1e-6)


def test_onnx_resnext50_at_small_input_matches_torchvision(tmp_path):
    reference = randomised(torchvision.models.resnext50_32x4d())
    weights = checkpoint(tmp_path, reference, bare=True)
    out = tmp_path / "rx50.onnx"
    build(RESNEXT50, "--backend", "onnx", "-o", out, "--weights", weights, "--input", "3x64x64", "--batch", 2)
    x = batch()
    with torch.no_grad():
        assert_close_relative(onnx_outputs(out, x), reference(x))


@pytest.fixture(scope="module")
def cifar20_onnx(cifar20_weights, tmp_path_factory) -> Path:
    """cifar20 with cifar20_weights as ONNX at batch 2, built once and only read by the tests."""
    out = tmp_path_factory.mktemp("c20onnx") / "c20.onnx"
    build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", cifar20_weights[0], "--batch", 2)
    return out


@pytest.fixture(scope="module")
def cifar20_export(cifar20_weights, tmp_path_factory) -> tuple[Path, str]:
    """cifar20 with cifar20_weights as an exported program at batch 2, and the line its build printed."""
    out = tmp_path_factory.mktemp("c20export") / "c20.pt2"
    line = build(CIFAR20, "--backend", "export", "-o", out, "--weights", cifar20_weights[0], "--batch", 2)
    return out, line


def test_onnx_cifar20_option_a_matches_pytorch(cifar20_weights, cifar20_onnx):
    x = batch(2, (3, 32, 32))
    with torch.no_grad():
        assert_close_relative(onnx_outputs(cifar20_onnx, x), cifar20_weights[1](x))


def test_onnx_option_a_shortcut_uses_only_standard_slice_and_pad(cifar20_onnx):
    graph = onnx.load(str(cifar20_onnx)).graph
    onnx.checker.check_model(str(cifar20_onnx), full_check=True)
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert {"Slice", "Pad"} <= {n.op_type for n in graph.node}


def test_exported_program_cifar20_matches_pytorch(cifar20_weights, cifar20_export):
    x = batch(2, (3, 32, 32))
    with torch.no_grad():
        assert_close_relative(torch.export.load(cifar20_export[0]).module()(x), cifar20_weights[1](x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_cifar20_matches_pytorch(cifar20_weights, tmp_path):
    weights, model = cifar20_weights
    out = tmp_path / "c20.ts"
    build(CIFAR20, "--backend", "torchscript", "-o", out, "--weights", weights, "--batch", 2)
    x = batch(3, (3, 32, 32))
    with torch.no_grad():
        assert_close_relative(torch.jit.load(str(out))(x), model(x))


def test_dynamic_batch_onnx_runs_at_batch_1_and_5(cifar20_weights, tmp_path):
    weights, model = cifar20_weights
    out = tmp_path / "dyn.onnx"
    build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", weights, "--dynamic-batch", "1:4:8")
    for n in (1, 5):
        x = batch(n, (3, 32, 32))
        with torch.no_grad():
            assert_close_relative(onnx_outputs(out, x), model(x))


def test_fp16_onnx_has_half_input_and_stays_close(cifar20_weights, tmp_path):
    weights, model = cifar20_weights
    out = tmp_path / "half.onnx"
    build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", weights, "--precision", "fp16", "--batch", 2)
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = batch(2, (3, 32, 32))
    with torch.no_grad():
        assert_close_relative(onnx_outputs(out, x.half()).astype(np.float32), model(x), 1e-2)


def test_folding_removes_every_batchnorm_of_a_post_activation_net(cifar20_weights):
    folded = fold_batchnorm(cifar20_weights[1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_folding_changes_outputs_by_at_most_1e_4_relative():
    model = randomised(resdsl.compile(RESNET18).with_input(SMALL).to_torch(seed=2))
    x = batch()
    with torch.no_grad():
        assert_close_relative(fold_batchnorm(model)(x), model(x))


def test_folding_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(resdsl.compile(CIFAR20).to_torch().train())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_tensorrt_without_a_gpu_exits_1_naming_what_is_missing(tmp_path):
    result = run("build", CIFAR20, "--backend", "tensorrt", "-o", tmp_path / "c20.engine")
    assert result.exit_code == 1
    assert "NVIDIA GPU" in result.output and "pip install 'resdsl[tensorrt]'" in result.output
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


def test_int8_is_refused_with_the_reason(tmp_path):
    result = run("build", CIFAR20, "--backend", "tensorrt", "-o", tmp_path / "c20.engine", "--precision", "int8")
    assert result.exit_code == 2
    assert "calibration" in result.output and "ModelOpt" in result.output


def test_weights_of_another_network_are_refused_naming_the_keys(resnet18_weights, tmp_path):
    result = run("build", CIFAR20, "--backend", "onnx", "-o", tmp_path / "m.onnx", "--weights", resnet18_weights[0])
    assert result.exit_code == 1
    assert "does not fit cifar20" in result.output and "unexpected layer2.0.downsample.0.weight" in result.output


@pytest.mark.parametrize("flags", [("--dynamic-batch", "8:4:1"), ("--dynamic-batch", "1-8"),
                                   ("--batch", "0"), ("--batch", "2", "--dynamic-batch", "1:2:4"),
                                   ("--precision", "fp8"), ("--precision", "bf16"), ("--input", "64x64")])
def test_bad_flag_values_exit_2_with_one_sentence(flags, tmp_path):
    result = run("build", CIFAR20, "--backend", "onnx", "-o", tmp_path / "m.onnx", *flags)
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_backend_exits_2(tmp_path):
    result = run("build", CIFAR20, "--backend", "coreml", "-o", tmp_path / "m")
    assert result.exit_code == 2 and "--backend must be one of" in result.output


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    import resdsl.backends.onnx as backend

    def broken(model, example, out, *args):
        out.write_bytes(b"half an onnx file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(backend, "export", broken)
    result = run("build", CIFAR20, "--backend", "onnx", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "exporter crashed" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def uint8_onnx(cifar20_mean_weights, tmp_path_factory) -> Path:
    """cifar20 with cifar20_mean_weights as ONNX fed uint8 images at batch 1 to 4, built once and only read."""
    out = tmp_path_factory.mktemp("c20uint8") / "c20.onnx"
    build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", cifar20_mean_weights[0], "--input-format", "uint8",
          "--dynamic-batch", "1:2:4")
    return out


def test_onnx_fed_uint8_images_matches_pytorch_fed_mean_subtracted_images(cifar20_mean_weights, uint8_onnx):
    _, model, mean = cifar20_mean_weights
    x = images()
    with torch.no_grad():
        expected = model(x.float() / 255 - mean)
    assert np.abs(onnx_outputs(uint8_onnx, x) - expected.numpy()).max() <= 1e-5


def test_onnx_fed_float_images_in_0_1_matches_pytorch_fed_mean_subtracted_images(cifar20_mean_weights, tmp_path):
    weights, model, mean = cifar20_mean_weights
    out = tmp_path / "c20.onnx"
    build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", weights, "--batch", 3)
    x = images().float() / 255
    with torch.no_grad():
        expected = model(x - mean)
    assert np.abs(onnx_outputs(out, x) - expected.numpy()).max() <= 1e-5


def test_onnx_metadata_props_record_the_input_contract_and_the_mean(cifar20_mean_weights, uint8_onnx):
    mean = cifar20_mean_weights[2]
    meta = onnx_metadata(uint8_onnx)
    assert onnx.load(str(uint8_onnx)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert (meta["network"], meta["resdsl_version"], meta["input_format"]) == ("cifar20", resdsl.__version__, "uint8")
    assert json.loads(meta["preprocessing"]) == ["x / 255", "x - mean"]
    recorded = json.loads(meta["mean"])
    assert recorded["shape"] == [3, 32, 32]
    assert torch.equal(torch.tensor(recorded["values"], dtype=torch.float32).view(3, 32, 32), mean)


def test_raw_input_leaves_the_mean_out_of_the_graph_and_records_it(cifar20_mean_weights, tmp_path):
    weights, model, mean = cifar20_mean_weights
    out = tmp_path / "c20.onnx"
    line = build(CIFAR20, "--backend", "onnx", "-o", out, "--weights", weights, "--raw-input", "--batch", 3)
    x = images().float() / 255 - mean
    with torch.no_grad():
        assert np.abs(onnx_outputs(out, x) - model(x).numpy()).max() <= 1e-5
    meta = onnx_metadata(out)
    assert meta["preprocessing_baked"] == "false" and json.loads(meta["mean"])["shape"] == [3, 32, 32]
    assert "--raw-input" in line


def test_exported_program_takes_uint8_images_at_any_batch_and_has_a_json_sidecar(cifar20_mean_weights, tmp_path):
    weights, model, mean = cifar20_mean_weights
    out = tmp_path / "c20.pt2"
    build(CIFAR20, "--backend", "export", "-o", out, "--weights", weights, "--input-format", "uint8",
          "--dynamic-batch", "1:2:8")
    program = torch.export.load(out).module()
    for n in (1, 5):
        x = images(n)
        with torch.no_grad():
            assert (program(x) - model(x.float() / 255 - mean)).abs().max() <= 1e-5
    sidecar = json.loads((tmp_path / "c20.pt2.json").read_text())
    assert sidecar["input_format"] == "uint8" and sidecar["input_dtype"] == "uint8"
    assert sidecar["preprocessing"] == ["x / 255", "x - mean"] and sidecar["mean"]["shape"] == [3, 32, 32]


def test_pytorch_artifact_with_mean_and_std_flags_keeps_torchvision_state_dict_keys(resnet18_weights, tmp_path):
    weights, reference = resnet18_weights
    out = tmp_path / "r18.pt2"
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    build(RESNET18, "--backend", "pytorch", "-o", out, "--weights", weights, "--input", "3x64x64",
          "--batch", 2, "--input-format", "uint8", "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)))
    artifact = torch.export.load(out).module()
    model = torchvision.models.resnet18()
    model.load_state_dict(artifact.state_dict(), strict=True)
    x = images(2, SMALL)
    prepared = (x.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        assert_close_relative(artifact(x), reference(prepared), 1e-5)


def test_build_line_says_there_is_no_mean_to_bake_without_weights(tmp_path):
    line = build(CIFAR20, "--backend", "export", "-o", tmp_path / "c20.pt2")
    assert "no mean to bake: built without --weights" in line


def test_build_line_says_there_is_no_mean_to_bake_when_the_weights_record_none(cifar20_export):
    assert "no mean to bake: weights.pt records none" in cifar20_export[1]


def test_a_mean_image_of_another_size_is_refused_naming_the_input_it_fits(cifar20_mean_weights, tmp_path):
    result = run("build", CIFAR20, "--backend", "onnx", "-o", tmp_path / "m.onnx", "--weights",
                 cifar20_mean_weights[0], "--input", "3x64x64")
    assert result.exit_code == 1 and "--input 3x32x32" in result.output and "--raw-input" in result.output
    assert not (tmp_path / "m.onnx").exists()


class TwoOutputs(torch.nn.Module):
    """A stand-in for a feature-tap model: a feature map and logits, as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.relu(self.conv(x))
        return {"features": features, "logits": self.fc(features.mean((2, 3)))}


@pytest.mark.parametrize("backend", ["onnx", "export"])
def test_a_model_with_two_outputs_exports_both_by_name_behind_the_baked_normalisation(backend, tmp_path):
    from resdsl.backends import load_backend

    model = TwoOutputs().eval()
    mean = torch.tensor([0.5, 0.4, 0.3])
    contract = InputContract("uint8", Normalization(mean, None, "test"))
    x = images(4, (3, 16, 16))
    with torch.no_grad():
        expected = model(x.float() / 255 - mean.view(3, 1, 1))
    out = tmp_path / f"two.{backend}"
    load_backend(backend).build(bake(model, contract, torch.float32), x, out, batch=BatchProfile(1, 4, 8),
                                expected=expected, metadata={})
    if backend == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        actual = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x.numpy()}),
                          strict=True))
    else:
        with torch.no_grad():
            actual = torch.export.load(out).module()(x)
    assert set(actual) == {"features", "logits"}
    for name, tensor in expected.items():
        assert np.abs(np.asarray(actual[name]) - tensor.numpy()).max() <= 1e-5
