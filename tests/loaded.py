"""A network's PyTorch module holding a reference model's weights, built without drawing weights of its own
(shared by the parity tests against torchvision and timm)."""

from __future__ import annotations

import torch
from torch import nn

import resdsl


def loaded_from(network: resdsl.Network, reference: nn.Module) -> nn.Module:
    """`network.to_torch()` on the meta device, then `reference`'s state_dict (strict: every key, every shape), in
    eval mode. Its initialisation would only be overwritten; a tensor the state_dict lacks stays on meta and fails
    the forward pass."""
    with torch.device("meta"):
        model = network.to_torch()
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return model.eval()
