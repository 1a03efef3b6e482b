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
        conv = node.args[0] if node.op == "call_module" and node.args else None
        if not _foldable(conv, node, gm):
            continue
        # the conv as it is now: an earlier norm may already be folded into it
        fused = fuse_conv_bn_eval(gm.get_submodule(conv.target), gm.get_submodule(node.target))
        _set_submodule(gm, conv.target, fused)
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def _foldable(conv: object, bn: fx.Node, gm: fx.GraphModule) -> bool:
    if not (isinstance(conv, fx.Node) and conv.op == "call_module" and len(conv.users) == 1
            and len(bn.args) == 1 and not bn.kwargs):
        return False
    if sum(node.op == "call_module" and node.target == conv.target for node in bn.graph.nodes) > 1:
        return False  # one conv module called twice: fusing it would change its other call too
    norm = gm.get_submodule(str(bn.target))
    return (
        type(gm.get_submodule(str(conv.target))) is nn.Conv2d
        and isinstance(norm, nn.BatchNorm2d)
        and norm.track_running_stats
        and norm.running_mean is not None
    )


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)

