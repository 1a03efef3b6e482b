"""`resdsl diff A B`: per-stage costs with deltas and the layers that differ, checked against hand computations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# torchvision's stem: a 7x7 conv 3->64 and its batchnorm; timm's deep stem (ResNet-C/D): 3x3 convs 3->32->32->64,
# each with a batchnorm. All run at 112x112 (stride 2), so MACs = 112 * 112 * conv weights.
TV_STEM_PARAMS = 7 * 7 * 3 * 64 + 2 * 64  # 9,536
DEEP_STEM_WEIGHTS = 3 * 3 * 3 * 32 + 3 * 3 * 32 * 32 + 3 * 3 * 32 * 64  # 28,512
DEEP_STEM_PARAMS = DEEP_STEM_WEIGHTS + 2 * (32 + 32 + 64)  # 28,768
TV_RESNET50_PARAMS = 25_557_032  # PAPER.md: torchvision resnet50


def _diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resdsl", "diff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def resnet50_vs_50d() -> dict:
    result = _diff("torchvision/resnet50", "timm/resnet50d", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_totals_and_delta_are_the_deep_stems_extra_weights(resnet50_vs_50d: dict) -> None:
    assert resnet50_vs_50d["a"]["params"] == TV_RESNET50_PARAMS
    assert resnet50_vs_50d["params_delta"] == DEEP_STEM_PARAMS - TV_STEM_PARAMS  # avg-down adds no weights
    assert resnet50_vs_50d["b"]["params"] == TV_RESNET50_PARAMS + DEEP_STEM_PARAMS - TV_STEM_PARAMS


def test_stem_row_has_both_stems_costs(resnet50_vs_50d: dict) -> None:
    stem = resnet50_vs_50d["stages"][0]
    assert stem["name"] == "stem"
    assert (stem["a"]["params"], stem["b"]["params"]) == (TV_STEM_PARAMS, DEEP_STEM_PARAMS)
    assert (stem["a"]["macs"], stem["b"]["macs"]) == (112 * 112 * 7 * 7 * 3 * 64, 112 * 112 * DEEP_STEM_WEIGHTS)
    assert stem["a"]["output"] == stem["b"]["output"] == [64, 56, 56]


def test_avg_down_shortcuts_cost_the_same_weights(resnet50_vs_50d: dict) -> None:
    # the stride-2 1x1 projection of layer2 (256 -> 512) becomes a 2x2 average pool and a stride-1 1x1 conv:
    # the same 131,072 weights at the same 28x28 output, so the same MACs
    layer2 = next(stage for stage in resnet50_vs_50d["stages"] if stage["name"] == "layer2")
    assert (layer2["params_delta"], layer2["macs_delta"]) == (0, 0)
    layers = {layer["path"]: layer for layer in resnet50_vs_50d["layers"]}
    pool = layers["layer2.0.downsample.0"]
    assert (pool["change"], pool["a"]["op"], pool["b"]["op"]) == ("changed", "conv", "avgpool")
    assert pool["b"]["shape"] == [256, 28, 28]
    assert layers["layer2.0.downsample.1"]["b"]["params"] == 256 * 512
    assert layers["layer2.0.downsample.2"]["change"] == "added"


def test_deep_stem_layers_are_added_and_the_7x7_removed(resnet50_vs_50d: dict) -> None:
    changes = {layer["path"]: layer["change"] for layer in resnet50_vs_50d["layers"]}
    assert changes["conv1"] == "removed"
    assert [path for path, change in changes.items() if path.startswith("conv1.") and change == "added"] == [
        f"conv1.{index}" for index in range(7)]


def test_text_shows_stages_side_by_side_and_layer_changes() -> None:
    result = _diff("torchvision/resnet50", "timm/resnet50d")
    assert result.returncode == 0, result.stderr
    stem = next(line for line in result.stdout.splitlines() if line.startswith("stem "))
    assert stem.split()[-4:] == [f"{DEEP_STEM_PARAMS:,}", f"{112 * 112 * DEEP_STEM_WEIGHTS:,}",
                                 f"+{DEEP_STEM_PARAMS - TV_STEM_PARAMS:,}",
                                 f"+{112 * 112 * (DEEP_STEM_WEIGHTS - 7 * 7 * 3 * 64):,}"]
    assert "\n- conv1: conv kernel 7x7, out 64, stride 2x2" in result.stdout
    assert "\n+ conv1.0: conv kernel 3x3, out 32, stride 2x2" in result.stdout


def test_identical_specs_have_no_layer_changes() -> None:
    result = _diff("torchvision/resnet18", "specs/torchvision/resnet18.res")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("no layer differs")


def test_a_bad_spec_is_reported_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.res"
    bad.write_text("network bad {\n  input 3x32x32\n  stem {\n    fc: linear 10\n  }\n}\n")
    result = _diff("torchvision/resnet18", str(bad))
    assert result.returncode == 1
    assert f"{bad}:4:5: error:" in result.stderr and "Traceback" not in result.stderr
