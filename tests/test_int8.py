"""`resdsl build --backend openvino --int8 --calibration DATA`: a small net trained briefly on Fashion-MNIST, quantised
by NNCF; the held-out figures the build reports are the ones OpenVINO's runtime and the PyTorch module give when
run here directly on the test images read from the idx files, the accuracy gate refuses and writes nothing, and
the options that do not go together are refused in one sentence. NNCF runs in a child interpreter: it never
enters this process, sends no usage report, fails in one sentence, and ends when its parent does."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino
import openvino.opset13 as ops
import pytest
import torch
from test_deploy import run  # the CLI runner the deploy tests use
from test_deploy_errors import sandbox_available
from test_openvino import CORE, RECORD_FORKS_AND_CONNECTIONS  # one Core per process: its last test says why

import resdsl
from resdsl.quantization import Int8Accuracy, QuantizationFailed, quantize
from resdsl.resolve import UsageError

FASHION = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.torch, pytest.mark.xdist_group("int8"),  # its fixtures, trained and built once
              pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package fashion-mnist")]

SPEC = """\
network fm {
  input 1x28x28
  stem { conv1: conv 3x3, 8, stride 2; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 1 x 8
    layer2: 1 x 16, stride 2
  }
  head { avgpool; fc: linear 10 }
  train { dataset "fashion-mnist" }
}
"""
HELD_OUT = 500
BATCH = 50  # few batches: NNCF's calibration runs the IR once per batch


def idx(name: str) -> np.ndarray:
    """An idx file of the Debian package, read with numpy (images N x 1 x 28 x 28, labels N)."""
    raw = gzip.decompress((FASHION / name).read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    array = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    return array[:, None] if dims == 3 else array


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """The spec and a state_dict after 60 SGD steps of batch 64 on the training images (56% test error)."""
    folder = tmp_path_factory.mktemp("int8")
    (folder / "fm.res").write_text(SPEC)
    images, labels = (torch.from_numpy(idx(f"train-{kind}-idx{dims}-ubyte.gz").copy()) for kind, dims in
                      (("images", 3), ("labels", 1)))
    model = resdsl.compile(SPEC).to_torch(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        chosen = torch.randint(len(labels), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(images[chosen].float() / 255), labels[chosen].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "w.pt")
    return folder, model.eval()


@dataclass(frozen=True)
class Built:
    """The INT8 build shared by the tests: its IR, the CLI's output, and the child's HOME and its record of forks
    and connections (test_openvino's sitecustomize, loaded by the quantising child through PYTHONPATH)."""

    path: Path
    output: str
    home: Path
    attempts: Path


@pytest.fixture(scope="module")
def built(trained: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Built in this process by the CLI, the child run with an empty HOME (no opt-out of usage reports there) and
    outside CI, as a user's machine."""
    folder, _ = trained
    home, site = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(RECORD_FORKS_AND_CONNECTIONS)
    with pytest.MonkeyPatch.context() as env:
        for name in ("CI", "NNCF_CI", "NNCF_DEV"):
            env.delenv(name, raising=False)
        env.setenv("HOME", str(home))
        env.setenv("PYTHONPATH", str(site), prepend=os.pathsep)
        result = run("build", folder / "fm.res", "--backend", "openvino", "-o", folder / "net.xml", "--weights",
                     folder / "w.pt", "--batch", BATCH, "--int8", "--calibration", FASHION, "--int8-images", HELD_OUT,
                     "--int8-max-drop", 100)  # the figures, whatever they are (the gate has its own test)
    assert result.exit_code == 0, result.output
    return Built(folder / "net.xml", result.output, home, site / "attempts")


def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """The test images the gate scores: HELD_OUT of the 10,000, every 20th."""
    chosen = np.arange(0, 10_000, 10_000 // HELD_OUT)
    return (torch.from_numpy(idx("t10k-images-idx3-ubyte.gz")[chosen].copy()),
            torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz")[chosen].astype(np.int64)))


def openvino_top1(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The IR's top-1 classes of uint8 images fed in 0-1, run by OpenVINO's CPU plugin directly, BATCH at a time."""
    compiled = CORE.compile_model(str(path), "CPU")
    x = images.float().numpy() / 255
    return torch.cat([torch.from_numpy(np.asarray(compiled(x[i:i + BATCH])[compiled.outputs[0]])).argmax(1)
                      for i in range(0, len(x), BATCH)])


def reported(output: str) -> dict[str, float]:
    match = re.search(r"on ([\d,]+) test images of fashion-mnist, evenly spaced: fp32 ([\d.]+)%, int8 ([\d.]+)% "
                      r"\(([-+][\d.]+) points\); top-1 agrees on ([\d.]+)%; calibrated on 300 training images", output)
    assert match, output
    images, fp32, int8, change, agreement = match.groups()
    return {"images": int(images.replace(",", "")), "fp32": float(fp32), "int8": float(int8),
            "change": float(change), "agreement": float(agreement)}


def test_reported_int8_error_is_what_openvino_gives_on_test_images_spread_over_the_split(built):
    path, output = built.path, built.output
    images, labels = held_out()
    errors = int((openvino_top1(path, images) != labels).sum())
    assert reported(output)["images"] == HELD_OUT
    assert reported(output)["int8"] == pytest.approx(100 * errors / HELD_OUT, abs=1e-9)


def test_reported_fp32_error_change_and_agreement_are_the_pytorch_modules(built, trained):
    path, output = built.path, built.output
    images, labels = held_out()
    with torch.no_grad():
        fp32 = trained[1](images.float() / 255).argmax(1)
    int8 = openvino_top1(path, images)
    figures = reported(output)
    assert figures["fp32"] == pytest.approx(100 * int((fp32 != labels).sum()) / HELD_OUT, abs=1e-9)
    assert figures["fp32"] < 75  # trained: chance is 90%
    assert figures["change"] == pytest.approx(figures["int8"] - figures["fp32"], abs=0.006)
    assert figures["agreement"] == pytest.approx(100 * int((fp32 == int8).sum()) / HELD_OUT, abs=1e-9)


def test_the_artifact_is_quantised_and_its_sidecar_records_the_figures(built):
    path, output = built.path, built.output
    ops = {op.get_type_name() for op in CORE.read_model(str(path)).get_ops()}
    assert "FakeQuantize" in ops
    sidecar = json.loads(path.with_name("net.xml.json").read_text())
    assert sidecar["precision"] == "int8"
    assert 100 * sidecar["int8"]["int8_error"] == pytest.approx(reported(output)["int8"], abs=1e-9)
    assert output.startswith(f"openvino: {path} (") and f", int8, batch {BATCH}," in output


def test_an_int8_build_leaves_nncf_out_of_the_calling_process(built):
    """Importing NNCF patches torch (its torch part, which OpenVINO's converter also imports once nncf is loaded);
    pytest-xdist workers that had quantised in-process died minutes later."""
    assert [name for name in sys.modules if name == "nncf" or name.startswith("nncf.")] == []


def test_the_quantising_child_sends_no_usage_report(built):
    """NNCF reports usage through openvino_telemetry, which writes a client id under ~/intel and sends the report
    from a forked copy of the process, unless the user opted out or CI is set (neither, here)."""
    assert not (built.home / "intel").exists()
    assert not built.attempts.exists()


def test_the_gate_refuses_an_int8_artifact_over_the_drop_and_keeps_the_users_file(trained):
    folder, _ = trained
    existing = folder / "kept.xml"
    existing.write_text("mine")
    result = run("build", folder / "fm.res", "--backend", "openvino", "-o", existing, "--weights", folder / "w.pt",
                 "--batch", BATCH, "--int8", "--calibration", FASHION, "--int8-images", 50, "--int8-max-drop", -100)
    assert result.exit_code == 1
    assert re.fullmatch(r"error: the openvino INT8 artifact failed verification: its top-1 error is [\d.]+% against "
                        r"the fp32 artifact's [\d.]+% on 50 test images of fashion-mnist, [-+][\d.]+ points, "
                        r"more than the --int8-max-drop of -100; the existing kept.xml is unchanged \(--no-verify "
                        r"writes it anyway\)\n", result.output), result.output
    assert existing.read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(("kept", ".kept"))) == ["kept.xml"]


def quantising_children(parent: int) -> list[int]:
    """The processes running resdsl.nncf_quantize whose parent is `parent`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # it ended meanwhile
            continue
        if ppid == parent and b"resdsl.nncf_quantize" in command:
            found.append(int(stat.parent.name))
    return found


def wait_for_child(parent: int) -> int:
    deadline = time.monotonic() + 60
    while not (children := quantising_children(parent)):
        assert time.monotonic() < deadline, "no quantising child started"
        time.sleep(0.05)
    return children[0]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def child_killed() -> Iterator[None]:
    """Kill this process's quantising child with SIGKILL as soon as it starts."""
    done = threading.Event()

    def kill() -> None:
        while not done.is_set():
            for pid in quantising_children(os.getpid()):
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield
    finally:
        done.set()
        killer.join()


def tiny_ir(path: Path) -> Path:
    """A 1x1x4x4 input convolved by two 3x3 kernels, written with OpenVINO's own API: an fp32 IR NNCF quantises."""
    x = ops.parameter([1, 1, 4, 4], np.float32, name="input")
    y = ops.convolution(x, ops.constant(np.ones((2, 1, 3, 3), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1])
    openvino.save_model(openvino.Model([y], [x]), str(path))
    return path


def test_a_killed_quantising_child_fails_the_build_in_one_sentence_and_writes_nothing(trained, tmp_path):
    folder, _ = trained
    with child_killed():
        result = run("build", folder / "fm.res", "--backend", "openvino", "-o", tmp_path / "net.xml", "--weights",
                     folder / "w.pt", "--batch", BATCH, "--int8", "--calibration", FASHION)
    assert result.exit_code == 1
    assert result.output == ("error: the openvino build failed: NNCF's INT8 quantisation process was killed by "
                             "SIGKILL\n")
    assert list(tmp_path.iterdir()) == []


def test_nncfs_own_error_is_its_one_line_and_writes_nothing(tmp_path):
    source = tiny_ir(tmp_path / "fp32.xml")
    with pytest.raises(QuantizationFailed) as failed:
        quantize(source, tmp_path / "int8.xml", [np.zeros((1, 3, 4, 4), np.float32)])  # 3 channels, not 1
    message = str(failed.value)
    assert message.startswith("NNCF's INT8 quantisation failed: ") and "\n" not in message, message
    assert "Traceback" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.bin", "fp32.xml"]


PARENT = """\
import sys
from pathlib import Path

import numpy as np

from resdsl.quantization import quantize

quantize(Path(sys.argv[1]), Path(sys.argv[2]), [np.zeros((1, 1, 4, 4), np.float32)])
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["interrupted", "killed"])
def test_a_parent_interrupted_or_killed_leaves_no_quantising_child(tmp_path, how):
    source = tiny_ir(tmp_path / "fp32.xml")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, source, tmp_path / "int8.xml"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child = wait_for_child(parent.pid)
        parent.send_signal(how)
        assert parent.wait(timeout=30) == -how
        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child)
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.parametrize(("flags", "message"), [
    (["--backend", "openvino", "--int8"], "--int8 needs --calibration DATA, the dataset"),
    (["--backend", "onnx", "--int8", "--calibration", FASHION], "--int8 quantises OpenVINO IR with NNCF: build "
                                                                "with --backend openvino, not onnx"),
    (["--backend", "openvino", "--calibration", FASHION], "--calibration gives the images --int8 calibrates on"),
    (["--backend", "openvino", "--int8", "--calibration", FASHION, "--int8-max-drop", "nan"],
     "--int8-max-drop takes a number of points of top-1 error, not nan"),
    (["--backend", "openvino", "--int8", "--calibration", FASHION, "--int8-images", 0],
     "--int8-images must be at least 1, not 0"),
])
def test_int8_options_that_do_not_go_together_are_a_usage_error(tmp_path, flags, message):
    result = run("build", "cifar20", "-o", tmp_path / "net.xml", *flags)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1, result.output
    assert list(tmp_path.iterdir()) == []


def test_int8_without_nncf_says_which_extra_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed: importing it fails
    result = run("build", trained[0] / "fm.res", "--backend", "openvino", "-o", tmp_path / "net.xml", "--int8",
                 "--calibration", FASHION)
    assert result.exit_code == 1
    assert result.output == "error: --int8 needs nncf, which is not installed here: pip install 'resdsl[int8]'\n"
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_refuses_int8_without_calibration(tmp_path):
    with pytest.raises(UsageError, match="--int8 needs --calibration DATA"):
        resdsl.build("cifar20", "openvino", tmp_path / "net.xml", int8=True)


def test_bench_times_the_int8_route_beside_fp32_openvino(trained):
    folder, _ = trained
    result = run("bench", folder / "fm.res", "--backend", "openvino,openvino-int8", "--calibration", FASHION,
                 "--batch", BATCH, "--runs", 3, "--warmup", 1, "--threads", 1)
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[2:]
    assert [row[:28].strip() for row in rows] == ["OpenVINO", "OpenVINO INT8 (NNCF)"]
    assert all(float(row.split()[-3]) > 0 for row in rows)  # p50, p90, img/s: numbers, not a reason


def test_bench_int8_route_without_calibration_is_a_usage_error(trained):
    result = run("bench", trained[0] / "fm.res", "--backend", "openvino-int8")
    assert result.exit_code == 2
    assert result.output == ("error: the openvino-int8 route needs --calibration DATA, the dataset whose training "
                             "images calibrate it\n")


def test_precision_int8_for_openvino_points_at_the_int8_flag(tmp_path):
    result = run("build", "cifar20", "--backend", "openvino", "-o", tmp_path / "net.xml", "--precision", "int8")
    assert result.exit_code == 2
    assert result.output.endswith("; for OpenVINO, build with --int8 --calibration DATA\n"), result.output


@pytest.mark.parametrize(("images", "fp32_wrong", "int8_wrong", "max_drop"), [
    (1000, 387, 397, 1.0),  # 10 more wrong of 1,000: 1 point
    (100, 3, 4, 1.0),  # 1 more wrong of 100: 1 point
    (500, 61, 71, 2.0),  # 10 more wrong of 500: 2 points
])
def test_a_drop_of_exactly_the_allowed_points_passes_the_gate(images: int, fp32_wrong: int, int8_wrong: int,
                                                              max_drop: float) -> None:
    measured = Int8Accuracy("fashion-mnist", "test", 300, images, fp32_error=fp32_wrong / images,
                            int8_error=int8_wrong / images, agreement=0.9)
    assert measured.failure(max_drop) is None


# A user's script that happens to be called nncf.py: importing it leaves a mark.
USERS_NNCF_PY = """\
from pathlib import Path

Path(__file__).with_name("ran").write_text("imported by the build")
"""


def test_an_int8_build_does_not_import_the_users_nncf_py_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "fm.res").write_text(SPEC)
    (tmp_path / "nncf.py").write_text(USERS_NNCF_PY)
    monkeypatch.chdir(tmp_path)
    result = run("build", "fm.res", "--backend", "openvino", "-o", "fm.xml", "--batch", BATCH, "--int8",
                 "--calibration", FASHION, "--int8-images", BATCH, "--int8-max-drop", 100)
    assert not (tmp_path / "ran").exists()
    assert result.exit_code == 0, result.output


# A 700 KiB tmpfs over the work folder holding the user's out.xml: the fp32 IR (~50 KiB) fits, the calibration
# batches handed to NNCF (300 Fashion-MNIST images in 0-1, ~940 KiB) do not.
FULL_DISK = """
mount -t tmpfs -o size=700k tmpfs "$0" && cd "$0" && printf previous > out.xml || exit 99
"$@"; status=$?
printf '\\n@@after\\n'; ls -A; cat out.xml
exit $status
"""


def test_an_int8_build_on_a_full_disk_names_the_output_and_keeps_the_users_file(tmp_path: Path) -> None:
    if not sandbox_available():
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    spec, work = tmp_path / "fm.res", tmp_path / "work"
    spec.write_text(SPEC)
    work.mkdir()
    command = ["unshare", "-rm", "sh", "-c", FULL_DISK, str(work), sys.executable, "-m", "resdsl", "build", str(spec),
               "--backend", "openvino", "-o", "out.xml", "--batch", str(BATCH), "--int8", "--calibration",
               str(FASHION)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.partition("\n@@after\n")[2].split() == ["out.xml", "previous"]
    assert done.stderr.strip() == ("error: cannot write out.xml: No space left on device; the existing out.xml is "
                                   "unchanged"), done.stderr


# quantize() into a 256 KiB tmpfs: the calibration batch (16 KiB) fits, the INT8 IR of a 256-channel 3x3
# convolution (~590 KiB of int8 weights) does not
QUANTIZE_ON_FULL_DISK = """
import sys
from pathlib import Path

import numpy as np

from resdsl.backends import WriteFailed
from resdsl.quantization import quantize

try:
    quantize(Path(sys.argv[1]), Path(sys.argv[2]), [np.zeros((1, 256, 4, 4), np.float32)])
except WriteFailed as error:
    print(f"WriteFailed: {error}")
"""


def test_a_full_disk_while_the_child_saves_the_int8_ir_is_the_systems_reason(tmp_path: Path) -> None:
    if not sandbox_available():
        pytest.skip("needs unprivileged user namespaces (unshare -rm) to mount a small tmpfs")
    x = ops.parameter([1, 256, 4, 4], np.float32, name="input")
    kernel = np.random.default_rng(0).standard_normal((256, 256, 3, 3)).astype(np.float32)
    y = ops.convolution(x, ops.constant(kernel), [1, 1], [1, 1], [1, 1], [1, 1])
    openvino.save_model(openvino.Model([y], [x]), str(tmp_path / "fp32.xml"))
    work = tmp_path / "work"
    work.mkdir()
    command = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" || exit 99; "$@"', str(work),
               sys.executable, "-c", QUANTIZE_ON_FULL_DISK, str(tmp_path / "fp32.xml"), str(work / "int8.xml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (0, "WriteFailed: No space left on device\n"), done.stderr


@pytest.mark.parametrize("features", ["layer1", "layer1,layer2"])
def test_int8_with_features_is_a_usage_error_naming_both(tmp_path, features):
    (tmp_path / "fm.res").write_text(SPEC)
    result = run("build", tmp_path / "fm.res", "--backend", "openvino", "-o", tmp_path / "out" / "fm.xml", "--batch",
                 BATCH, "--features", features, "--int8", "--calibration", FASHION, "--int8-images", BATCH)
    assert result.exit_code == 2, result.output
    assert result.output == ("error: --int8 checks the INT8 artifact's top-1 classes, which a --features backbone "
                             "does not output: build with one of --int8 and --features\n")
    assert not (tmp_path / "out").exists()


def test_bench_refuses_an_empty_calibration_path_as_build_does(tmp_path, monkeypatch):
    (tmp_path / "fm.res").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    result = run("bench", "fm.res", "--backend", "openvino-int8", "--calibration", "", "--no-compare", "--runs", 5,
                 "--warmup", 1)
    assert result.exit_code == 2, result.output
    assert result.output == "error: --calibration is empty: give a dataset folder\n"


IMAGE_FOLDER_SPEC = """\
network im {
  input 3x64x64
  stem { conv1: conv 3x3, 8, stride 2; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) {
    layer1: 1 x 8
  }
  head { avgpool; fc: linear 10 }
  train { dataset "imagenet" }
}
"""


def test_the_held_out_images_of_an_image_folder_are_not_only_its_first_classes(jpeg_folder, tmp_path):
    """val/ lists its images class by class: a net that always answers the last class is right on some of 20
    held-out images of a 10-class folder, not wrong on all as it would be on its first classes alone."""
    state = resdsl.compile(IMAGE_FOLDER_SPEC).to_torch(seed=0).state_dict()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.bias"] = torch.tensor([0.0] * 9 + [10.0])  # always the last class, whatever the image
    torch.save(state, tmp_path / "last_class.pt")
    (tmp_path / "im.res").write_text(IMAGE_FOLDER_SPEC)
    result = resdsl.build(tmp_path / "im.res", "openvino", tmp_path / "im.xml", weights=tmp_path / "last_class.pt",
                          batch=10, int8=True, calibration=jpeg_folder, int8_images=20, int8_max_drop=100)
    assert result.int8 is not None and result.int8.images == 20
    assert result.int8.fp32_error < 1.0


NO_DATASET_SPEC = SPEC.replace('  train { dataset "fashion-mnist" }\n', "")  # its recipe's dataset: cifar10


def test_dataset_names_what_the_calibration_folder_holds_for_a_spec_without_one(tmp_path):
    (tmp_path / "fm.res").write_text(NO_DATASET_SPEC)
    result = run("build", tmp_path / "fm.res", "--backend", "openvino", "-o", tmp_path / "fm.xml", "--batch", BATCH,
                 "--int8", "--calibration", FASHION, "--dataset", "fashion-mnist", "--int8-images", BATCH,
                 "--int8-max-drop", 100)
    assert result.exit_code == 0, result.output
    assert f"int8: top-1 error on {BATCH} test images of fashion-mnist" in result.output


def test_calibration_data_of_another_dataset_than_the_recipes_says_to_name_it(tmp_path):
    (tmp_path / "fm.res").write_text(NO_DATASET_SPEC)
    result = run("build", tmp_path / "fm.res", "--backend", "openvino", "-o", tmp_path / "fm.xml", "--int8",
                 "--calibration", FASHION)
    assert result.exit_code == 1 and list(tmp_path.iterdir()) == [tmp_path / "fm.res"]
    assert result.output.startswith(f"error: no cifar10 data found in {FASHION}: ")
    assert result.output.endswith("(INT8 is calibrated on cifar10, fm's recipe's dataset; name the dataset DATA holds "
                                  "with --dataset)\n")


def test_dataset_without_int8_is_a_usage_error(tmp_path):
    (tmp_path / "fm.res").write_text(NO_DATASET_SPEC)
    result = run("build", tmp_path / "fm.res", "--backend", "openvino", "-o", tmp_path / "fm.xml", "--dataset",
                 "fashion-mnist")
    assert result.exit_code == 2
    assert result.output == "error: --dataset names the dataset --calibration holds; it goes with --int8\n"


def test_bench_calibrates_on_the_dataset_named_for_a_spec_without_one(tmp_path):
    (tmp_path / "fm.res").write_text(NO_DATASET_SPEC)
    result = run("bench", tmp_path / "fm.res", "--backend", "openvino-int8", "--calibration", FASHION, "--dataset",
                 "fashion-mnist", "--batch", BATCH, "--no-compare", "--runs", 4, "--warmup", 1, "--json")
    assert result.exit_code == 0, result.output
    assert [timing["route"] for timing in json.loads(result.stdout)["results"]] == ["OpenVINO INT8 (NNCF)"]


def test_bench_dataset_without_calibration_is_a_usage_error(tmp_path):
    (tmp_path / "fm.res").write_text(NO_DATASET_SPEC)
    result = run("bench", tmp_path / "fm.res", "--backend", "openvino", "--dataset", "fashion-mnist", "--no-compare")
    assert result.exit_code == 2
    assert result.output == "error: --dataset names the dataset --calibration holds; it goes with --calibration\n"
