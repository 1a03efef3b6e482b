"""A feature extractor's weights are the whole network's weights under the same seed, as torchvision's and timm's
feature extractors (built from the whole model) have them."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

import resdsl

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("names", [["layer2"], ["layer2.0.conv1", "layer3"], ["maxpool"]])
def test_feature_extractor_draws_torchvisions_weights_under_the_same_seed(names: list[str]) -> None:
    torch.manual_seed(0)
    extractor = create_feature_extractor(torchvision.models.resnet18(), {n: n for n in names})
    torch.manual_seed(0)
    features = resdsl.compile("torchvision/resnet18").to_torch(features=names)
    ours, theirs = features.state_dict(), extractor.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_seeded_feature_extractor_draws_timms_features_only_weights_zero_init_last() -> None:
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", features_only=True, out_indices=(1, 2))
    features = resdsl.compile("torchvision/resnet18").to_torch(seed=0, features=["layer1", "layer2"],
                                                                   zero_init_residual=True)
    theirs = reference.state_dict()
    ours = {key: value for key, value in features.state_dict().items() if key in theirs}
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_zero_init_residual_zeroes_the_kept_branches_of_a_feature_extractor() -> None:
    features = resdsl.compile("cifar20").to_torch(seed=0, features=["layer2"], zero_init_residual=True)
    assert not any(key.startswith("layer3") for key in features.state_dict())
    assert all(block.bn2.weight.abs().sum() == 0 for block in [*features.layer1, *features.layer2])
