"""Every IR node's value in one forward of a lowered module, by walking its module tree (shared by tests)."""

from __future__ import annotations

import torch
from torch import fx, nn

from resdsl.backends.pytorch import GeneratedModule


def record_values(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Values keyed by IR node id (and group path), each cloned before later in-place ops can change it."""
    values: dict[str, torch.Tensor] = {}

    def run(module: nn.Module, path: str, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, GeneratedModule):
            prefix = f"{path}." if path else ""

            class Recorder(fx.Interpreter):
                def call_module(self, target: str, args: tuple, kwargs: dict) -> object:
                    return run(self.fetch_attr(target), prefix + target, *args)

                def run_node(self, n: fx.Node) -> object:
                    result = super().run_node(n)
                    if "ir" in n.meta:
                        values[prefix + n.meta["ir"]] = result.clone()
                    return result

            return Recorder(module, graph=type(module).graph).run(x)
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                x = run(child, f"{path}.{name}", x)
            return x
        out = module(x)
        values[path] = out.clone()
        return out

    run(model, "", x)
    return values
