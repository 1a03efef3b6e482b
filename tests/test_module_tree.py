"""The lowered module as the PyTorch ecosystem uses it, each check against torchvision or timm doing the same."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor

import resdsl
from resdsl.backends.pytorch import UnknownFeature

pytestmark = pytest.mark.torch

STAGES = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


def _pair(name: str) -> tuple[nn.Module, nn.Module]:
    """resdsl's and torchvision's model of the same name, with the same weights, in eval mode."""
    reference = getattr(torchvision.models, name)().eval()
    model = resdsl.compile(f"torchvision/{name}").to_torch().eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    return model, reference


def _image(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_stage_is_a_sequential_of_blocks_like_torchvision() -> None:
    model, reference = _pair("resnet18")
    x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(_image()))))
    with torch.no_grad():
        torch.testing.assert_close(model.layer1(x), reference.layer1(x), rtol=0, atol=0)
        torch.testing.assert_close(model.layer1[1:](x), reference.layer1[1:](x), rtol=0, atol=0)
    assert len(model.layer3) == len(reference.layer3) == 2
    assert [type(b).__name__ for b in model.layer2] == ["Basic", "Basic"]
    assert isinstance(model.layer4[-1], nn.Module) and model.layer4[-1] is list(model.layer4)[-1]


def test_block_and_its_downsample_are_callable_like_torchvision() -> None:
    model, reference = _pair("resnet50")
    x = torch.randn(2, 256, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.layer2[0](x), reference.layer2[0](x), rtol=0, atol=0)
        torch.testing.assert_close(model.layer2[0].downsample(x), reference.layer2[0].downsample(x), rtol=0, atol=0)


def test_forward_hooks_fire_in_torchvision_order() -> None:
    model, reference = _pair("resnet50")
    shared = {name for name, _ in reference.named_modules()} & {name for name, _ in model.named_modules()}
    shared -= {name for name in shared if name.endswith("relu")}  # torchvision calls one relu module three times

    def fired(network: nn.Module) -> list[str]:
        order: list[str] = []
        for name, module in network.named_modules():
            if name in shared:
                module.register_forward_hook(lambda *_, name=name: order.append(name))
        with torch.no_grad():
            network(_image())
        return order

    assert fired(model) == fired(reference)
    assert {"layer3", "layer3.5", "layer2.0.downsample"} <= set(fired(model))


def test_intermediate_layer_getter_gives_torchvision_features() -> None:
    model, reference = _pair("resnet50")
    ours, theirs = IntermediateLayerGetter(model, STAGES), IntermediateLayerGetter(reference, STAGES)
    with torch.no_grad():
        torch.testing.assert_close(ours(_image()), theirs(_image()), rtol=0, atol=0)


def test_faster_rcnn_over_a_resdsl_backbone_runs_and_trains() -> None:
    model, reference = _pair("resnet18")
    ours = BackboneWithFPN(model, STAGES, [64, 128, 256, 512], out_channels=32)
    theirs = BackboneWithFPN(reference, STAGES, [64, 128, 256, 512], out_channels=32)
    theirs.fpn.load_state_dict(ours.fpn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(_image(96)), theirs(_image(96)), rtol=0, atol=0)
    detector = FasterRCNN(ours, num_classes=3, min_size=96, max_size=96)
    detector.train()
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 60.0, 70.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 10.0, 90.0, 50.0]]), "labels": torch.tensor([2])}]
    losses = detector(list(_image(96)), targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.layer2[0].conv1.weight.grad is not None
    detector.eval()
    with torch.no_grad():
        detections = detector(list(_image(96)))
    assert len(detections) == 2 and {"boxes", "labels", "scores"} <= set(detections[0])


def test_features_match_timm_features_only_with_channels_and_reduction() -> None:
    reference = timm.create_model("resnet50d", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    full = resdsl.compile("timm/resnet50d")
    model = full.to_torch(features=["layer1", "layer2", "layer3", "layer4"]).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        ours, theirs = model(_image()), reference(_image())
    assert list(ours) == ["layer1", "layer2", "layer3", "layer4"]
    for mine, other in zip(ours.values(), theirs, strict=True):
        torch.testing.assert_close(mine, other, rtol=0, atol=0)
    assert [f.channels for f in model.feature_info] == reference.feature_info.channels()
    assert [f.reduction for f in model.feature_info] == reference.feature_info.reduction()


def test_feature_reduction_is_the_stride_as_timms_at_an_input_not_a_multiple_of_32() -> None:
    """The stride FPN-style necks read: 4, 8, 16, 32 at 100x100 (not 100 // 25 = 4, 100 // 13 = 7, ...)."""
    reference = timm.create_model("resnet50d", features_only=True, out_indices=(1, 2, 3, 4))
    network = resdsl.compile("timm/resnet50d").with_input((3, 100, 100))
    model = network.to_torch(seed=0, features=["layer1", "layer2", "layer3", "layer4"])
    assert [f.reduction for f in model.feature_info] == reference.feature_info.reduction()


def test_features_of_any_layer_match_torchvision_feature_extractor() -> None:
    model, reference = _pair("resnet50")
    names = ["layer2.3.conv2", "layer3.0.downsample", "layer3", "layer4.2.bn3"]
    features = resdsl.compile("torchvision/resnet50").to_torch(features=names).eval()
    features.load_state_dict({k: v for k, v in model.state_dict().items() if k in features.state_dict()})
    extractor = create_feature_extractor(reference, {n: n for n in names})
    with torch.no_grad():
        ours, theirs = features(_image()), extractor(_image())
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)


def test_feature_extractor_leaves_out_the_layers_after_its_last_feature() -> None:
    features = resdsl.compile("torchvision/resnet18").to_torch(features=["layer3"])
    assert not any(key.startswith(("layer4", "fc")) for key in features.state_dict())
    features(_image())["layer3"].sum().backward()
    assert all(p.grad is not None for p in features.parameters())


def test_feature_that_names_nothing_is_a_clear_error() -> None:
    network = resdsl.compile("torchvision/resnet18")
    try:
        network.to_torch(features=["layer5"])
    except UnknownFeature as error:
        assert "'layer5' is not a layer or group of resnet18" in str(error)
    else:
        raise AssertionError("no error for an unknown feature")


def test_global_seed_decides_the_weights_like_torchvision() -> None:
    network = resdsl.compile("torchvision/resnet18")
    torch.manual_seed(1)
    first = network.to_torch().conv1.weight
    torch.manual_seed(2)
    second = network.to_torch().conv1.weight
    torch.manual_seed(1)
    again = network.to_torch().conv1.weight
    torch.manual_seed(1)
    reference = torchvision.models.resnet18().conv1.weight
    assert not torch.equal(first, second)
    assert torch.equal(first, again) and torch.equal(first, reference)


def test_blocks_of_one_definition_and_case_share_one_generated_class() -> None:
    model = resdsl.compile("torchvision/resnet50").to_torch()
    same = {type(block) for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage[1:]}
    changed = {type(stage[0]) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)}
    assert len(same) == 1 and len(changed) == 1 and same != changed
    assert "downsample = self.downsample(x)" in model.layer1[0].code


def test_torch_compile_sees_one_graph_through_the_tree() -> None:
    model = resdsl.compile("torchvision/resnet50").to_torch().eval()
    explanation = torch._dynamo.explain(model)(_image())
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
