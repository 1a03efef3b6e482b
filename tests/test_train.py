"""`resdsl train`, `eval` and `plot` end to end on a tiny idx dataset and a tiny network, in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.train.checkpoint import CheckpointError, load

pytestmark = [pytest.mark.torch, pytest.mark.xdist_group("train")]  # its runs, trained once

QUICK = ["--checkpoint-every", "4", "--log-every", "2", "--eval-every", "6", "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tiny_workspace: Path) -> Path:
    return tiny_workspace


@pytest.fixture(scope="module")
def cli(resdsl_cli):
    return resdsl_cli


@pytest.fixture(scope="module")
def train(cli, workspace: Path):
    """`train(out, *flags)`: tiny.res trained in the workspace with quick intervals."""
    return lambda out, *extra: cli("train", "tiny.res", "--data", "data", "--out", out, *QUICK, *extra, cwd=workspace)


# `resdsl train ...` that dies by SIGKILL right after saving the checkpoint of iteration 8.
KILLED_AFTER_CHECKPOINT_8 = """
import os, signal, sys
from resdsl.train import checkpoint
from resdsl.cli.app import main
save = checkpoint.save
def save_then_die(path, state):
    save(path, state)
    if state["iteration"] == 8:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save = save_then_die
sys.argv[0] = "resdsl"
main()
"""


@pytest.fixture(scope="module")
def finished(train, workspace: Path) -> Path:
    """An uninterrupted 12-iteration run."""
    result = train("straight")
    assert result.returncode == 0, result.stderr
    return workspace / "straight"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_metrics_config_spec_and_checkpoints(finished: Path):
    assert {p.name for p in finished.iterdir()} >= {"metrics.jsonl", "config.json", "spec.res", "last.pt", "best.pt"}
    assert json.loads((finished / "config.json").read_text())["recipe"]["lr"] == 0.05
    assert "network tiny" in (finished / "spec.res").read_text()
    saved = load(finished / "last.pt")
    assert saved["iteration"] == 12


def test_metrics_follow_the_step_schedule(finished: Path):
    steps = [m for m in _metrics(finished) if "train_error" in m]
    assert [m["iteration"] for m in steps] == [2, 4, 6, 8, 10, 12]
    # lr of the last step logged: steps 0..5 at 0.05, from step 6 on 0.005
    assert [m["lr"] for m in steps] == pytest.approx([0.05, 0.05, 0.05, 0.005, 0.005, 0.005])
    assert {"epoch", "train_loss", "images_per_s"} <= set(steps[0])
    evals = [m for m in _metrics(finished) if "test_error" in m]
    assert [m["iteration"] for m in evals] == [6, 12] and all("val_error" in m for m in evals)


def test_resume_after_sigkill_ends_bit_identical(workspace: Path, finished: Path, cli, train):
    killed = cli("train", "tiny.res", "--data", "data", "--out", "killed", *QUICK, cwd=workspace,
                     script=KILLED_AFTER_CHECKPOINT_8)
    assert killed.returncode == -signal.SIGKILL
    assert load(workspace / "killed" / "last.pt")["iteration"] == 8
    resumed = train("killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ours, reference = load(workspace / "killed" / "last.pt"), load(finished / "last.pt")
    assert ours["iteration"] == reference["iteration"] == 12
    assert ours["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    assert [m["iteration"] for m in _metrics(workspace / "killed")] == [m["iteration"] for m in _metrics(finished)]


def test_truncated_checkpoint_is_refused(workspace: Path, finished: Path, train):
    out = workspace / "truncated"
    out.mkdir()
    data = (finished / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    result = train("truncated", "--resume")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot resume: {Path('truncated') / 'last.pt'} is a torch.save archive that is " \
                            "truncated or damaged\n"
    assert "Traceback" not in result.stderr


def test_garbage_checkpoint_is_refused_by_load():
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"garbage-{os.getpid()}.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip file")
    try:
        with pytest.raises(CheckpointError, match=r"is a torch\.save archive that is truncated or damaged"):
            load(path)
    finally:
        path.unlink()


def test_existing_run_is_not_overwritten_without_resume(finished: Path, train):
    before = (finished / "last.pt").read_bytes()
    result = train("straight")
    assert result.returncode == 1 and "pass --resume" in result.stderr
    assert (finished / "last.pt").read_bytes() == before


def test_ctrl_c_checkpoints_and_exits_130(workspace: Path, zygote):
    process = zygote.start(["train", "tiny.res", "--data", "data", "--out", "interrupted", *QUICK,
                            "--iterations", "100000"], cwd=workspace)
    metrics = workspace / "interrupted" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    saved = load(workspace / "interrupted" / "last.pt")
    assert 2 <= saved["iteration"] < 100000


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_sigterm_keeps_the_progress_as_ctrl_c_does(tmp_path: Path) -> None:
    """A scheduler's preemption (Slurm, Kubernetes, systemd) is SIGTERM: the run should checkpoint as on Ctrl-C,
    not lose every iteration since the last --checkpoint-every."""
    tiny = "network tiny {\n  input 1x28x28\n  stem {\n    conv 3x3, 4\n  }\n  head {\n    avgpool\n    flatten\n" \
           "    linear 10\n  }\n}\n"
    (tmp_path / "tiny.res").write_text(tiny)
    run = subprocess.Popen([sys.executable, "-m", "resdsl", "train", "tiny.res", "--dataset", "fashion-mnist",
                            "--data", str(FASHION), "--out", "run", "--batch", "4", "--iterations", "1000000",
                            "--checkpoint-every", "1000000", "--eval-every", "1000000", "--log-every", "1"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None and (
            not metrics.exists() or metrics.read_text().count("\n") < 3):
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, stderr  # as a shell reports a process SIGTERM ended
    assert "stopped by SIGTERM at iteration" in stdout
    assert (tmp_path / "run" / "last.pt").is_file(), stderr


def test_missing_data_is_one_sentence(workspace: Path, cli):
    result = cli("train", "tiny.res", "--data", "nowhere", "--out", "none", cwd=workspace,
                     env={"RESDSL_DATA": str(workspace / "empty"), "HOME": str(workspace / "home")})
    assert result.returncode == 1
    assert result.stderr.startswith("error: no mnist data found in nowhere") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(("requested", "local_rank", "gpus", "message"), [
    ("cuda:7", 0, 0, "--device cuda:7 was asked for, but this machine has no CUDA GPU"),
    ("cuda:7", 0, 2, "--device cuda:7 was asked for, but this machine has 2 GPUs (cuda:0 to cuda:1)"),
    ("cuda:1", 0, 1, "--device cuda:1 was asked for, but this machine has 1 GPU (cuda:0)"),
    ("cuda", 3, 2, "--device cuda gives the process of LOCAL_RANK 3 the GPU cuda:3, but this machine has 2 GPUs "
                   "(cuda:0 to cuda:1)"),
], ids=["no GPU", "index past two", "index past one", "local rank past two"])
def test_a_missing_gpu_is_named_as_asked_with_the_count_there_is(monkeypatch: pytest.MonkeyPatch, requested: str,
                                                                 local_rank: int, gpus: int, message: str):
    from resdsl.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(distributed.DeviceError) as caught:
        distributed.setup(requested)
    assert str(caught.value) == message


def test_nvjpeg_decoder_on_a_cpu_run_of_a_tensor_dataset_is_refused(workspace: Path, tmp_path: Path):
    from resdsl.data import DataError
    from resdsl.recipe import recipe_of
    from resdsl.train import RunConfig, run

    network = resdsl.compile(str(workspace / "tiny.res"))
    config = RunConfig(recipe=recipe_of(network.program, []), out=tmp_path / "run", data=workspace / "data",
                       device="cpu", decoder="nvjpeg")
    with pytest.raises(DataError) as caught:
        run(network, config)
    assert str(caught.value) == "the nvjpeg decoder decodes on a CUDA GPU, and this run's device is the CPU"
    assert not (tmp_path / "run").exists()


def test_bad_recipe_flag_points_at_it(workspace: Path, cli):
    result = cli("train", "tiny.res", "--lr", "-1", cwd=workspace)
    assert result.returncode == 2  # a flag value out of range is a usage error
    assert "<--lr>:1:4: error: the learning rate must be positive" in result.stderr


def _error_by_hand(workspace: Path, state: dict, mean: torch.Tensor) -> float:
    """The test error computed here, independently of resdsl's evaluation code."""
    from resdsl.data import load_dataset

    model = resdsl.compile(str(workspace / "tiny.res")).to_torch()
    model.load_state_dict(state)
    model.eval()
    test = load_dataset("mnist", workspace / "data", train=False)
    with torch.no_grad():
        logits = model(test.images.float() / 255 - mean)
    return float((logits.argmax(1) != test.labels).float().mean())


def test_eval_prints_the_test_error_of_a_checkpoint_and_a_bare_state_dict(workspace: Path, finished: Path, cli):
    saved = load(finished / "last.pt")
    expected = f"error {100 * _error_by_hand(workspace, saved['model'], saved['mean']):.2f}%"
    result = cli("eval", "tiny.res", "--weights", str(finished / "last.pt"), "--data", "data", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    torch.save(saved["model"], workspace / "bare.pt")
    result = cli("eval", "tiny.res", "--weights", "bare.pt", "--data", "data", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "64 images" in result.stdout


def test_eval_of_a_bare_state_dict_in_a_run_folder_subtracts_the_runs_mean_image(workspace: Path, finished: Path,
                                                                                    cli):
    run = workspace / "bare_run"
    shutil.copytree(finished, run)
    saved = load(run / "last.pt")
    torch.save(saved["model"], run / "bare.pt")
    recorded = torch.full_like(saved["mean"], 0.5)  # not the mean of any split: only the file can give it
    torch.save(recorded, run / "mean.pt")
    expected = _error_by_hand(workspace, saved["model"], recorded)
    assert expected != _error_by_hand(workspace, saved["model"], saved["mean"])
    result = cli("eval", "tiny.res", "--weights", str(run / "bare.pt"), "--data", "data", "--json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["top1_error"] == pytest.approx(expected)


def test_eval_of_a_run_fitted_to_smaller_images_scores_the_views_training_saw(workspace: Path, cli):
    (workspace / "tiny16.res").write_text((workspace / "tiny.res").read_text().replace("1x12x12", "1x16x16")
                                          .replace("crop 12", "crop 16"))
    result = cli("train", "tiny16.res", "--data", "data", "--out", "fitted", "--iterations", "30", "--eval-every", "30",
                 "--recipe", "schedule constant()", "--seed", "3", "--device", "cpu", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "recompiled for" in result.stdout + result.stderr
    logged = [m for m in _metrics(workspace / "fitted") if m["kind"] == "eval"][-1]["test_error"]
    result = cli("eval", "fitted", "--data", "data", "--json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["top1_error"] == pytest.approx(logged, abs=1e-6)


def test_a_crop_larger_than_the_datas_images_is_refused(workspace: Path, train):
    result = train("too_big", "--augment", "pad 2, crop 14, flip")
    assert result.returncode == 1
    assert "the recipe's crop 14 is larger than mnist's 12x12 images" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_refuses_a_truncated_checkpoint(workspace: Path, finished: Path, cli):
    data = (finished / "last.pt").read_bytes()
    (workspace / "half.pt").write_bytes(data[: len(data) // 3])
    result = cli("eval", "tiny.res", "--weights", "half.pt", "--data", "data", cwd=workspace)
    assert result.returncode == 1 and "truncated or damaged" in result.stderr and "Traceback" not in result.stderr


def test_plot_writes_a_png(workspace: Path, finished: Path, cli):
    result = cli("plot", "straight", "-o", "curves.png", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert (workspace / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_directory_without_metrics_is_refused(workspace: Path, cli):
    (workspace / "empty_run").mkdir(exist_ok=True)
    result = cli("plot", "empty_run", "-o", "none.png", cwd=workspace)
    assert result.returncode == 1 and "has no metrics.jsonl" in result.stderr
    assert not (workspace / "none.png").exists()


def test_two_cpu_processes_stay_in_sync(workspace: Path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "resdsl", "train", "tiny.res", "--data", "data", "--out", "ddp", *QUICK, "--iterations", "6"]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    digests = json.loads((workspace / "ddp" / "ranks.json").read_text())["digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


# Two ranks: a DDP step, then each of resdsl's collectives, then teardown. Each rank writes the
# number of gloo worker threads alive before and after teardown to `workers.RANK`.
COLLECTIVES_THEN_TEARDOWN = """
import os, torch
from torch import nn
from resdsl.train import distributed
def workers():
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    return names.count("pt_gloo_runloop")
context = distributed.setup("cpu")
model = distributed.wrap(nn.Linear(3, 2), context, sync_bn=False)
model(torch.ones(4, 3)).sum().backward()
distributed.all_sum([1.0], context)
distributed.all_gather("digest", context)
distributed.barrier(context)
before = workers()
distributed.teardown(context)
open(f"workers.{context.rank}", "w").write(f"{before} {workers()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_teardown_joins_the_workers_that_ran_resdsls_collectives(tmp_path: Path):
    # DDP keeps the default group (and its workers) alive past destroy_process_group; a worker of that
    # group still releasing one of our tensors as Python exits aborts the process. Ours must be joined.
    (tmp_path / "collectives.py").write_text(COLLECTIVES_THEN_TEARDOWN)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "collectives.py"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        before, after = map(int, (tmp_path / f"workers.{rank}").read_text().split())
        assert after < before


def test_until_train_error_warmup_holds_its_lr_until_the_error_drops(workspace: Path, train):
    # every window's error is below 100%, so the warm-up ends at the first log line (iteration 2)
    result = train("warm", "--iterations", "6", "--warmup", "lr 0.01, until_train_error 1.0",
                    "--schedule", "constant()")
    assert result.returncode == 0, result.stderr
    steps = [m for m in _metrics(workspace / "warm") if "train_error" in m]
    assert [m["lr"] for m in steps] == [0.01, 0.05, 0.05]


def test_cifar110_spec_alone_finds_cifar10_in_resdsl_data(tmp_path: Path, cli, make_cifar):
    # 5050 training images: enough for the 5k split
    make_cifar(tmp_path / "store" / "cifar10" / "cifar-10-batches-py", 10, train=5050, test=1010)
    spec = Path(resdsl.__file__).parent.parent / "specs" / "cifar110.res"
    result = cli("train", str(spec), "--iterations", "1", "--batch", "4", "--limit-eval", "8", "--out", "run",
                 cwd=tmp_path, env={"RESDSL_DATA": str(tmp_path / "store")})
    assert result.returncode == 0, result.stderr
    assert "50 training images" in result.stdout  # 5050 less the paper's 5000 held out
    assert load(tmp_path / "run" / "last.pt")["iteration"] == 1


# --- runs that other tools read --------------------------------------------------------------

TRAIN_KEYS = ["kind", "iteration", "epoch", "time", "elapsed", "lr", "train_loss", "train_error", "images_per_s"]
EVAL_KEYS = ["kind", "iteration", "epoch", "time", "elapsed", "val_error", "test_error"]


def test_metrics_records_are_one_kind_each_with_wall_clock_time(finished: Path):
    records = _metrics(finished)
    assert [list(r) for r in records if r["kind"] == "train"] == [TRAIN_KEYS] * 6  # docs/training.md's schema
    assert [list(r) for r in records if r["kind"] == "eval"] == [EVAL_KEYS] * 2
    finished_at = (finished / "last.pt").stat().st_mtime
    times = [r["time"] for r in records]
    assert times == sorted(times) and finished_at - 600 < times[0] <= times[-1] <= finished_at + 1
    elapsed = [r["elapsed"] for r in records]
    assert elapsed == sorted(elapsed) and 0 < elapsed[-1] < 600


def test_run_folder_spec_compiles_alone_as_the_trained_network(workspace: Path, finished: Path, cli):
    checked = cli("check", "spec.res", cwd=finished)
    assert checked.returncode == 0, checked.stderr
    alone, original = resdsl.compile(str(finished / "spec.res")), resdsl.compile(str(workspace / "tiny.res"))
    assert (alone.name, alone.params, alone.macs, alone.input_shape) == \
        (original.name, original.params, original.macs, original.input_shape)
    from resdsl.recipe import Recipe

    assert alone.recipe == Recipe.from_json(load(finished / "last.pt")["recipe"])


def test_run_files_are_written_with_the_umask_mode(finished: Path):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("last.pt", "best.pt", "config.json", "spec.res", "metrics.jsonl", "mean.pt"):
        assert stat.S_IMODE((finished / name).stat().st_mode) == 0o666 & ~mask, name


def test_resume_may_make_a_finished_run_longer(workspace: Path, finished: Path, train):
    shutil.copytree(finished, workspace / "longer")
    result = train("longer", "--resume", "--iterations", "16")
    assert result.returncode == 0, result.stderr
    assert "now ends at iteration 16 (was 12)" in result.stdout
    steps = [m for m in _metrics(workspace / "longer") if m["kind"] == "train"]
    assert [m["iteration"] for m in steps] == [2, 4, 6, 8, 10, 12, 14, 16]
    # the milestone stays at 6: lr 0.05 x 0.1 from there on, also past the first run's end
    assert [m["lr"] for m in steps[-2:]] == pytest.approx([0.005, 0.005])
    assert load(workspace / "longer" / "last.pt")["iteration"] == 16


def test_a_finished_run_made_longer_continues_as_an_uninterrupted_run(workspace: Path, cli):
    def run(out: str, *extra: str):
        result = cli("train", "tiny.res", "--data", "data", "--out", out, "--log-every", "4", "--eval-every", "4",
                     "--checkpoint-every", "4", "--seed", "3", "--device", "cpu",
                     "--recipe", "schedule plateau(factor: 0.5, patience: 1)", *extra, cwd=workspace)
        assert result.returncode == 0, result.stderr

    run("straight_10", "--iterations", "10")
    run("ended_at_6", "--iterations", "6")  # 6 is off the intervals: its end log and eval only observe
    run("ended_at_6", "--iterations", "10", "--resume")
    assert torch.equal(torch.cat([t.flatten() for t in load(workspace / "straight_10" / "last.pt")["model"].values()]),
                       torch.cat([t.flatten() for t in load(workspace / "ended_at_6" / "last.pt")["model"].values()]))
    timing = {"time", "elapsed", "images_per_s"}

    def records(run: str, skip: int | None = None) -> list[dict]:
        return [{k: v for k, v in m.items() if k not in timing}
                for m in _metrics(workspace / run) if m["iteration"] != skip]

    assert records("ended_at_6", skip=6) == records("straight_10")


@pytest.fixture(scope="module")
def logged(cli, workspace: Path) -> Path:
    """A 20-iteration run without a validation split, logged for TensorBoard too."""
    result = cli("train", "tiny.res", "--data", "data", "--out", "logged", "--iterations", "20", "--split", "0",
                 "--log-every", "5", "--eval-every", "10", "--device", "cpu", "--tensorboard", cwd=workspace)
    assert result.returncode == 0, result.stderr
    return workspace / "logged"


def test_tensorboard_reads_the_scalars_of_a_20_iteration_run(logged: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged))
    events.Reload()
    records = _metrics(logged)
    for kind, key in (("train", "train_loss"), ("train", "train_error"), ("train", "lr"), ("eval", "test_error")):
        scalars = events.Scalars(f"{kind}/{key}")
        expected = [r for r in records if r["kind"] == kind]
        assert [s.step for s in scalars] == [r["iteration"] for r in expected]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in expected], rel=1e-6)  # float32
        assert [s.wall_time for s in scalars] == pytest.approx([r["time"] for r in expected], abs=1e-3)
    assert [s.step for s in events.Scalars("train/train_loss")] == [5, 10, 15, 20]


def test_config_records_the_dataset_input_and_mean_image(workspace: Path, logged: Path):
    config = json.loads((logged / "config.json").read_text())
    assert (config["dataset"], config["input"], config["classes"], config["mean"]) == ("mnist", [1, 12, 12], 10,
                                                                                       "mean.pt")
    images = (workspace / "data" / "train-images-idx3-ubyte").read_bytes()[16:]
    by_hand = torch.frombuffer(bytearray(images), dtype=torch.uint8).reshape(256, 1, 12, 12).double().mean(0) / 255
    mean = torch.load(logged / "mean.pt", weights_only=True)
    assert torch.allclose(mean.double(), by_hand, atol=1e-6)
    assert torch.equal(load(logged / "last.pt")["mean"], mean)


# --- fine-tuning -----------------------------------------------------------------------------

HEAD_100 = """\
network cifar20_100 extends "{specs}/cifar_resnet.res" (n = 3) {{
  head {{ avgpool; fc: linear 100 }}
}}
"""
CIFAR_QUICK = ["--split", "0", "--batch", "8", "--limit-eval", "8", "--device", "cpu", "--no-mean-subtract"]


@pytest.fixture(scope="module")
def cifar_runs(tmp_path_factory, cli, make_cifar) -> Path:
    """cifar20 trained 3 iterations on 10 classes (`first/`), and the data for a 100-class head."""
    root = tmp_path_factory.mktemp("finetune")
    make_cifar(root / "cifar10", 10, train=40, test=8)
    make_cifar(root / "cifar100", 100, train=16, test=8)
    (root / "cifar20_100.res").write_text(HEAD_100.format(specs=Path(resdsl.__file__).parent.parent / "specs"))
    spec = Path(resdsl.__file__).parent.parent / "specs" / "cifar20.res"
    result = cli("train", str(spec), "--data", "cifar10", "--out", "first", "--iterations", "3", *CIFAR_QUICK,
                 cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_fine_tuning_loads_all_but_a_head_of_another_size(cifar_runs: Path, cli):
    tuned = cli("train", "cifar20_100.res", "--dataset", "cifar100", "--data", "cifar100", "--out", "tuned",
                "--weights", "first/last.pt", "--iterations", "1", "--lr", "1e-9", "--momentum", "0",
                "--weight-decay", "0", *CIFAR_QUICK, cwd=cifar_runs)
    assert tuned.returncode == 0, tuned.stderr
    assert ("re-initialised fc.weight (10x64 in the file, 100x64 here), fc.bias (10 in the file, 100 here)"
            in tuned.stdout)
    source, result = load(cifar_runs / "first" / "last.pt")["model"], load(cifar_runs / "tuned" / "last.pt")["model"]
    assert f"loaded {len(source) - 2} of {len(source)} tensors" in tuned.stdout
    assert result["fc.weight"].shape == (100, 64)
    # one step at lr 1e-9 leaves the loaded weights where they were (BatchNorm statistics move with the batch)
    for name, tensor in source.items():
        if not name.startswith("fc.") and "running_" not in name and "num_batches" not in name:
            assert torch.allclose(result[name], tensor, atol=1e-6), name


def test_strict_refuses_a_head_of_another_size(cifar_runs: Path, cli):
    refused = cli("train", "cifar20_100.res", "--dataset", "cifar100", "--data", "cifar100", "--out", "strict",
                  "--weights", "first/last.pt", "--strict", "--iterations", "1", *CIFAR_QUICK, cwd=cifar_runs)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr == ("error: first/last.pt does not fit cifar20_100: wrong shape for fc.weight (10x64 in the "
                              "file, 100x64 here), fc.bias (10 in the file, 100 here); without --strict a last layer "
                              "of another size is re-initialised\n")
    assert not (cifar_runs / "strict").exists()
