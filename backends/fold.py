"""Fold each eval-mode BatchNorm into the convolution that feeds it (an fx pass)."""

from __future__ import annotations

import copy

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` (eval mode) where every conv -> BatchNorm pair is one conv with a bias.

    A BatchNorm whose input is not a conv used only by it (e.g. pre-activation units) stays. Norms in a row
    fold one after the other into the conv before them.
    """
    if model.training:
        raise ValueError("BatchNorm folding needs a model in eval mode; call model.eval() first")
    gm = copy.deepcopy(model) if isinstance(model, fx.GraphModule) else fx.symbolic_trace(copy.deepcopy(model))
    for node in list(gm.graph.nodes):
        pair = _foldable(node, gm)
        if pair is None:
            continue
        conv, conv_module, norm = pair
        _set_submodule(gm, str(conv.target), fuse_conv_bn_eval(conv_module, norm))
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def _foldable(bn: fx.Node, gm: fx.GraphModule) -> tuple[fx.Node, nn.Conv2d, nn.BatchNorm2d] | None:
    """The conv node feeding `bn`, with both modules as they are now (an earlier norm may already be folded into
    the conv), if `bn` is a BatchNorm that can fold into it; else None."""
    conv = bn.args[0] if bn.op == "call_module" and bn.args else None
    if not (isinstance(conv, fx.Node) and conv.op == "call_module" and len(conv.users) == 1
            and len(bn.args) == 1 and not bn.kwargs):
        return None
    if sum(node.op == "call_module" and node.target == conv.target for node in bn.graph.nodes) > 1:
        return None  # one conv module called twice: fusing it would change its other call too
    conv_module, norm = gm.get_submodule(str(conv.target)), gm.get_submodule(str(bn.target))
    if (type(conv_module) is nn.Conv2d and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats
            and norm.running_mean is not None):
        return conv, conv_module, norm
    return None


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)

