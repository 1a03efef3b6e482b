"""`resdsl build --backend openvino`: OpenVINO IR that OpenVINO's own runtime loads and that matches torchvision's
models carrying the same --weights (the spec's module for cifar20), fixed and dynamic batch, with the input
contract baked in or left out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino
import pytest
import torch
import torchvision
from test_deploy import randomised, run  # the CLI runner and BatchNorm randomiser the deploy tests use

import resdsl

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


CORE = openvino.Core()  # one per process: see the last test


def openvino_outputs(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The IR run by OpenVINO's CPU plugin directly (not through resdsl), in fp32 arithmetic."""
    compiled = CORE.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return torch.from_numpy(np.asarray(compiled(x.numpy())[compiled.outputs[0]]))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def images(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(3))


def build(*args: object) -> str:
    result = run("build", *args)
    assert result.exit_code == 0, result.output
    return result.output


def torchvision_weights(tmp_path: Path, model: torch.nn.Module) -> tuple[torch.nn.Module, Path]:
    path = tmp_path / "weights.pt"
    torch.save(randomised(model).state_dict(), path)
    return model, path


def test_cifar20_ir_with_uint8_input_matches_the_module_fed_normalised_images(tmp_path):
    network = resdsl.compile(SPECS / "cifar20.res")
    model = randomised(network.to_torch(seed=5))
    mean = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    weights = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "mean": mean}, weights)
    out = tmp_path / "c20.xml"
    build("cifar20", "--backend", "openvino", "-o", out, "--weights", weights, "--input-format", "uint8",
          "--batch", 3)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(pixels.float() / 255 - mean)
    assert relative_error(openvino_outputs(out, pixels), expected) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c20.bin", "c20.xml", "c20.xml.json", "last.pt"]


def test_resnet18_ir_at_a_fixed_batch_matches_torchvision_with_the_mean_and_std_baked(tmp_path):
    reference, weights = torchvision_weights(tmp_path, torchvision.models.resnet18())
    out = tmp_path / "r18.xml"
    build(SPECS / "torchvision" / "resnet18.res", "--backend", "openvino", "-o", out, "--weights", weights,
          "--input", "3x64x64", "--batch", 2, "--mean", ",".join(map(str, IMAGENET_MEAN)),
          "--std", ",".join(map(str, IMAGENET_STD)))
    x = images(2, (3, 64, 64))
    with torch.no_grad():
        expected = reference((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))
    assert relative_error(openvino_outputs(out, x), expected) <= 1e-4


def test_resnext_ir_with_a_dynamic_batch_matches_torchvision_at_every_batch_in_the_range(tmp_path):
    reference, weights = torchvision_weights(tmp_path, torchvision.models.resnext50_32x4d())
    out = tmp_path / "rx50.xml"
    build(SPECS / "torchvision" / "resnext50_32x4d.res", "--backend", "openvino", "-o", out, "--weights", weights,
          "--input", "3x64x64", "--dynamic-batch", "1:2:4", "--raw-input")
    for n in (1, 3, 4):
        x = images(n, (3, 64, 64))
        with torch.no_grad():
            expected = reference(x)
        assert relative_error(openvino_outputs(out, x), expected) <= 1e-4
    metadata = json.loads((tmp_path / "rx50.xml.json").read_text())
    assert metadata["batch"] == {"min": 1, "opt": 2, "max": 4} and metadata["input_format"] == "raw"


def test_openvino_build_without_openvino_names_the_extra_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    result = run("build", "cifar20", "--backend", "openvino", "-o", tmp_path / "c.xml")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: the openvino backend needs openvino, which does not import here: pip install 'resdsl[openvino]'"]
    assert list(tmp_path.iterdir()) == []


def test_openvino_build_refuses_fp16_naming_the_precision_it_builds(tmp_path):
    result = run("build", "cifar20", "--backend", "openvino", "-o", tmp_path / "c.xml", "--precision", "fp16")
    assert result.exit_code == 2 and result.stderr == "error: the openvino backend builds fp32, not fp16\n"


def test_openvino_build_to_a_name_without_xml_says_which_name_to_give(tmp_path):
    result = run("build", "cifar20", "--backend", "openvino", "-o", tmp_path / "c.ir")
    assert result.exit_code == 1 and list(tmp_path.iterdir()) == []
    assert result.stderr == ("error: an OpenVINO IR file ends in .xml (its weights go beside it in .bin); "
                             "give -o c.xml, not c.ir\n")


def test_openvino_build_sends_no_usage_report(tmp_path, monkeypatch):
    """OpenVINO's converter reports usage over the network from a forked process unless the user opted out (or CI
    is set); a build makes no network call and forks nothing."""
    monkeypatch.delenv("CI", raising=False)
    forks: list[str] = []

    def refuse_fork() -> int:
        forks.append("fork")
        raise OSError("the build forked")

    monkeypatch.setattr("os.fork", refuse_fork)
    build("cifar20", "--backend", "openvino", "-o", tmp_path / "c20.xml")
    assert forks == []


# `import openvino` reports usage itself (openvino/tools/ovc/__init__.py: a client id under ~/intel, then a forked
# copy of the process connects to Google Analytics), which test_openvino_build_sends_no_usage_report cannot see in
# this process, where openvino was imported first: a fresh build, with forks and connections recorded and refused.
TINY_SPEC = """\
network tiny {
  input 1x8x8
  stem { conv1: conv 3x3, 4; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 1 x 4
  }
  head { avgpool; fc: linear 2 }
}
"""

# Loaded by the fresh interpreter through PYTHONPATH (sitecustomize): records and refuses forks and connections.
RECORD_FORKS_AND_CONNECTIONS = """\
import os, socket


def _record(what):
    with open(os.path.join(os.path.dirname(__file__), "attempts"), "a") as attempts:
        attempts.write(what + "\\n")


def _refuse_fork():
    _record("fork")
    raise OSError("forked")


def _refuse_connection(address, *args, **kwargs):
    _record(f"connect {address}")
    raise OSError("connected")


os.fork = _refuse_fork
socket.create_connection = _refuse_connection
"""


def test_a_fresh_openvino_build_sends_no_usage_report_and_writes_nothing_under_home(tmp_path: Path) -> None:
    home, site = tmp_path / "home", tmp_path / "site"
    home.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORD_FORKS_AND_CONNECTIONS)
    (tmp_path / "tiny.res").write_text(TINY_SPEC)
    env = {name: value for name, value in os.environ.items() if name not in ("CI", "NNCF_CI", "NNCF_DEV")}
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "resdsl", "build", "tiny.res", "--backend", "openvino", "-o",
                           "tiny.xml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    attempts = site / "attempts"
    assert not attempts.exists(), attempts.read_text()
    assert not (home / "intel").exists()


# Two models compiled by resdsl's loader and freed, then DataLoader workers forked and a subprocess run: the
# process died by SIGSEGV while each model had an OpenVINO Core of its own.
_FREED_MODELS_THEN_FORKS = """
import gc, subprocess, sys
from pathlib import Path
import numpy as np
import openvino
import openvino.opset13 as ops
import torch
from resdsl.backends.openvino import load

path = Path(sys.argv[1])
x = ops.parameter([1, 1, 4, 4], np.float32, name="input")
y = ops.convolution(x, ops.constant(np.ones((2, 1, 3, 3), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1])
openvino.save_model(openvino.Model([y], [x]), str(path))
first, second = load(path, "cpu"), load(path, "cpu")
first(torch.ones(1, 1, 4, 4)), second(torch.ones(1, 1, 4, 4))
del first, second
gc.collect()
for _ in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=2, num_workers=2):
    pass
subprocess.run(["true"], check=True)
print("survived")
"""


def test_a_process_that_freed_loaded_models_survives_forking_and_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _FREED_MODELS_THEN_FORKS, str(tmp_path / "tiny.xml")],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "survived\n"), done.stderr[-2000:]


# openvino_ir.save into a 256 KiB tmpfs with room for the weights' 147,456 bytes but not for the xml as well:
# OpenVINO removes what it wrote when the save fails, so a probe of the weights' size alone fits
SAVE_WITH_ROOM_FOR_THE_WEIGHTS_ONLY = """
import sys
from pathlib import Path

import numpy as np
import openvino
import openvino.opset13 as ops

from resdsl.backends import WriteFailed, openvino_ir

folder = Path(sys.argv[1])
x = ops.parameter([1, 64, 4, 4], np.float32, name="input")
kernel = np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32)
model = openvino.Model([ops.convolution(x, ops.constant(kernel), [1, 1], [1, 1], [1, 1], [1, 1])], [x])
(folder / "filler").write_bytes(bytes(256 * 1024 - kernel.nbytes - 1024))  # 4 KiB pages: the weights' 36 left
try:
    openvino_ir.save(openvino, model, folder / "out.xml")
except WriteFailed as error:
    print(f"WriteFailed: {error}")
except RuntimeError as error:
    print(f"RuntimeError: {error}")
print(sorted(path.name for path in folder.iterdir()))
"""


def test_a_disk_with_room_for_the_weights_but_not_the_xml_is_named_full(tmp_path: Path) -> None:
    from test_deploy_errors import sandbox_available

    if not sandbox_available():
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    command = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" || exit 99; "$@"',
               str(tmp_path), sys.executable, "-c", SAVE_WITH_ROOM_FOR_THE_WEIGHTS_ONLY, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (0, "WriteFailed: No space left on device\n['filler']\n"), done.stderr
