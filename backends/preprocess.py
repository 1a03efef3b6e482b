"""The input contract of an artifact: images normalised inside the graph as in training, or input already prepared.

Training feeds the network `(uint8 images / 255 - mean) / std` (resdsl.data.Augment.normalize). An artifact takes
`uint8` images (0-255), `float` images (0-1, what torchvision's ToTensor gives) and applies the rest itself, or,
built with `--raw-input`, the network's own input with the normalisation left to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

RANGES = {"uint8": "uint8 images 0-255", "float": "float images 0-1"}


@dataclass(frozen=True)
class Normalization:
    """`x - mean`, then `x / std` (each C, or C x H x W, in 0-1 units); `source` says where they came from or why
    there are none."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    source: str = ""

    def __bool__(self) -> bool:
        return self.mean is not None or self.std is not None

    def steps(self) -> list[str]:
        return [step for step, stat in (("x - mean", self.mean), ("x / std", self.std)) if stat is not None]

    def misfit(self, shape: tuple[int, ...]) -> str | None:
        """Why the statistics do not fit images of `shape` (C x H x W), or None if they do."""
        for name, stat in (("mean", self.mean), ("std", self.std)):
            if stat is not None and tuple(stat.shape) not in ((shape[0],), tuple(shape)):
                size = "x".join(map(str, stat.shape))
                return f"the {name} ({self.source}) is {size} but the network takes {'x'.join(map(str, shape))} images"
        return None

    def describe(self) -> str:
        """`the per-pixel mean from w.pt`, `mean and std from --mean/--std`..."""
        stats = {name: stat for name, stat in (("mean", self.mean), ("std", self.std)) if stat is not None}
        kinds = {"per-pixel" if stat.dim() == 3 else "per-channel" for stat in stats.values()}
        kind = kinds.pop() if len(kinds) == 1 else "per-pixel/per-channel"
        return f"the {kind} {' and '.join(stats)} from {self.source}"


@dataclass(frozen=True)
class InputContract:
    """What the artifact's input is (`uint8`, `float` or `raw`) and the normalisation baked in or expected."""

    format: str
    normalization: Normalization

    @property
    def steps(self) -> list[str]:
        """The preprocessing from images to the network's input: done by the graph unless raw."""
        return (["x / 255"] if self.format in ("uint8", "raw") else []) + self.normalization.steps()

    @property
    def baked(self) -> bool:
        return self.format != "raw" and bool(self.steps)

    def example(self, n: int, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
        """A random batch of what the artifact takes: uint8 or 0-1 images, or normal noise for raw input."""
        if self.format == "uint8":
            return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=generator)
        draw = torch.rand if self.format == "float" else torch.randn
        return draw(n, *shape, generator=generator).to(dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The fp32 network input for `images` in this format (what the baked graph computes)."""
        return normalizer(self, torch.float32)(images) if self.baked else images.float()

    def describe(self) -> str:
        """The input part of the build line."""
        steps = ", ".join(self.steps)
        if self.format == "raw":
            return f"raw input (--raw-input): apply {steps} first, as the metadata records"
        if self.normalization:
            return f"input {RANGES[self.format]}, normalised in the graph ({steps}; {self.normalization.describe()})"
        scaled = f", {steps} in the graph" if steps else ""
        return f"input {RANGES[self.format]}{scaled}; no mean to bake: {self.normalization.source}"

    def metadata(self) -> dict[str, Any]:
        """What a runtime needs to know to feed the artifact, as JSON-ready values."""
        norm = self.normalization
        return {
            "input_format": self.format,
            "input_range": {"uint8": "0-255", "float": "0-1", "raw": "normalised"}[self.format],
            "input_layout": "NCHW",
            "preprocessing": self.steps,
            "preprocessing_baked": self.baked,
            "mean": _tensor_json(norm.mean),
            "std": _tensor_json(norm.std),
            "normalization_source": norm.source,
        }


class Normalize(nn.Module):
    """The graph's first step: images in the contract's format -> the network's input, computed in fp32."""

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(self, scale: bool, normalization: Normalization, dtype: torch.dtype) -> None:
        super().__init__()
        self.scale, self.dtype = scale, dtype
        # non-persistent: the artifact's state_dict keeps exactly the network's keys
        self.register_buffer("mean", _broadcastable(normalization.mean), persistent=False)
        self.register_buffer("std", _broadcastable(normalization.std), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self.scale:
            x = x / 255
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x.to(self.dtype)


def normalizer(contract: InputContract, dtype: torch.dtype) -> Normalize:
    return Normalize(contract.format == "uint8", contract.normalization, dtype)


def bake(model: nn.Module, contract: InputContract, dtype: torch.dtype) -> nn.Module:
    """`model` (whose weights are in `dtype`) with the contract's preprocessing as its first step.

    The result is an fx GraphModule sharing the model's submodules, so its state_dict keys are the model's.
    """
    if not contract.baked:
        return model
    graph_module = fx.symbolic_trace(model)
    name = "normalize_input"
    while hasattr(graph_module, name):
        name = f"_{name}"
    graph_module.add_submodule(name, normalizer(contract, dtype))
    (images, *others) = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    if others:
        raise ValueError("input normalisation can only be baked into a model with one input")
    with graph_module.graph.inserting_after(images):
        prepared = graph_module.graph.call_module(name, (images,))
    images.replace_all_uses_with(prepared, delete_user_cb=lambda user: user is not prepared)
    graph_module.recompile()
    return graph_module


def _broadcastable(stat: torch.Tensor | None) -> torch.Tensor | None:
    if stat is None:
        return None
    stat = stat.detach().to(torch.float32)
    return stat.view(-1, 1, 1) if stat.dim() == 1 else stat


def _tensor_json(stat: torch.Tensor | None) -> dict[str, Any] | None:
    """Shape and values (9 significant digits, enough to restore a float32 exactly)."""
    if stat is None:
        return None
    values = [float(f"{v:.9g}") for v in stat.detach().to(torch.float32).flatten().tolist()]
    return {"shape": list(stat.shape), "values": values}
