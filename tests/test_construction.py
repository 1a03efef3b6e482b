"""Building a module draws each weight once, yet gives the weights of PyTorch's construct-then-initialise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import modules_imported_by
from torch import nn

import resdsl
from resdsl.backends.pytorch import skip_draws

pytestmark = pytest.mark.torch

SPECS = Path(resdsl.__file__).resolve().parent.parent / "specs"


@pytest.mark.parametrize("before", [0, 5, 623, 624])
@pytest.mark.parametrize("count", [1, 622, 623, 624, 625, 1248, 100_003])
def test_skipping_draws_leaves_the_generator_where_drawing_them_does(before: int, count: int) -> None:
    drawn, skipped = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for generator in (drawn, skipped):
        torch.empty(before).uniform_(generator=generator)
    torch.empty(count).uniform_(generator=drawn)
    skip_draws(skipped, count)
    assert torch.equal(skipped.get_state(), drawn.get_state())


MIXED = """network mixed {
  input 3x8x8
  stem { conv 3x3, 8, bias; groupnorm 4; relu; conv 1x1, 16; batchnorm; relu; conv 3x3, 4, bias }
  head { avgpool; linear 10 }
}
"""


def _mixed_by_hand() -> list[nn.Module]:
    """The same layers built and initialised as torchvision does: PyTorch's defaults, then He normal convs."""
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.Conv2d(8, 16, 1, bias=False),
              nn.BatchNorm2d(16), nn.Conv2d(16, 4, 3, padding=1), nn.Linear(4, 10)]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return layers


def test_biased_convs_norms_and_linears_get_the_weights_of_construct_then_initialise() -> None:
    torch.manual_seed(4)
    expected = [p for layer in _mixed_by_hand() for p in layer.parameters()]
    expected_state = torch.get_rng_state()
    torch.manual_seed(4)
    actual = list(resdsl.compile(MIXED).to_torch().parameters())
    assert [p.shape for p in actual] == [p.shape for p in expected]
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), expected_state)  # later draws are the same too


def test_norms_start_with_fresh_running_statistics() -> None:
    norm = next(m for m in resdsl.compile(MIXED).to_torch(seed=0).modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(norm.running_mean, torch.zeros(16)) and torch.equal(norm.running_var, torch.ones(16))
    assert norm.num_batches_tracked.item() == 0


def test_modules_are_plain_torch_classes() -> None:
    model = resdsl.compile(MIXED).to_torch(seed=0)
    assert {type(m) for m in model.modules()} >= {nn.Conv2d, nn.GroupNorm, nn.BatchNorm2d, nn.Linear}
    assert all(type(m).__module__.startswith(("torch.", "resdsl.")) for m in model.modules())


@pytest.mark.parametrize("features", [None, ["layer1"]])
def test_building_a_module_does_not_import_networkx(features: list[str] | None) -> None:
    code = f"import resdsl; resdsl.compile({str(SPECS / 'cifar20.res')!r}).to_torch(features={features!r})"
    assert modules_imported_by(code, ("networkx",))[1] == []


def _attributes(module: nn.Module) -> dict[str, object]:
    """A module's attributes, its tensors as (shape, dtype, requires_grad) and its containers as their contents."""
    seen: dict[str, object] = {}
    for name, value in vars(module).items():
        if name in ("_parameters", "_buffers"):
            value = {k: t if t is None else (t.shape, t.dtype, t.requires_grad, type(t)) for k, t in value.items()}
        seen[name] = value
    return seen


def test_each_layer_has_the_attributes_of_torch_s_own_constructor() -> None:
    model = resdsl.compile(MIXED).to_torch(seed=0)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.GroupNorm, nn.BatchNorm2d, nn.Linear))]
    by_hand = _mixed_by_hand()
    assert [type(m) for m in layers] == [type(m) for m in by_hand]
    for built, reference in zip(layers, by_hand, strict=True):
        assert _attributes(built) == _attributes(reference)


def test_layers_of_one_configuration_share_no_state() -> None:
    model = resdsl.compile(SPECS / "cifar20.res").to_torch(seed=0)
    first, second = model.layer1[0].conv1, model.layer1[1].conv1
    first.register_forward_hook(lambda *_: None)
    first.weight.data.zero_()
    assert not second._forward_hooks and second.weight.abs().sum() > 0
    assert first.weight.data_ptr() != second.weight.data_ptr()
    assert first._parameters is not second._parameters and first._buffers is not second._buffers


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parameters_take_the_default_dtype_at_build_time(dtype: torch.dtype) -> None:
    network = resdsl.compile(MIXED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = network.to_torch(seed=0)
    finally:
        torch.set_default_dtype(previous)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert {b.dtype for b in model.buffers()} == {dtype, torch.int64}  # num_batches_tracked is a long
