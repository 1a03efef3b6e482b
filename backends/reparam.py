"""Structural re-parameterisation (an fx pass): parallel linear branches summed into one tensor become one conv.

A sum whose terms read the same tensor `x` through a conv (with or without a BatchNorm after it), a BatchNorm
alone (identity through BN) or nothing (`x` itself) is one linear map of `x`, hence one conv with a bias: each
branch's kernel, zero-padded to the largest and centred, plus a centred unit kernel per identity (per group for
grouped convs), summed (Ding et al. 2021, RepVGG). Any spec's sums qualify, not one block type; afterwards every
remaining conv -> BatchNorm pair folds (resdsl.backends.fold).
"""

from __future__ import annotations

import copy
import operator
from collections import Counter
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import fx, nn
from torch.fx.node import Argument
from torch.nn.utils.fusion import fuse_conv_bn_weights

from resdsl.backends.fold import _set_submodule, fold_batchnorm

ADDS = (operator.add, torch.add)


@dataclass(frozen=True)
class Branch:
    """One term of a sum as a linear map of `source`: `conv` then `norm`, `norm` alone, or identity (neither)."""

    term: fx.Node
    source: fx.Node
    conv: nn.Conv2d | None = None
    norm: nn.BatchNorm2d | None = None
    inner: tuple[fx.Node, ...] = ()  # the branch's nodes before `term`, removed with it


def reparameterize(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` (eval mode) with every mergeable sum of branches as one conv, then BatchNorm folded."""
    if model.training:
        raise ValueError("re-parameterisation needs a model in eval mode; call model.eval() first")
    gm = copy.deepcopy(model) if isinstance(model, fx.GraphModule) else fx.symbolic_trace(copy.deepcopy(model))
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    modules: dict[str, nn.Module] = {name: module for name, module in gm.named_modules()
                                     if calls[name] == 1}  # a shared one stays whole
    for node in list(gm.graph.nodes):
        if _is_add(node) and not any(_is_add(user) and _summand(node, user) for user in node.users):
            _merge_sum(gm, node, modules)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return fold_batchnorm(gm)


def _is_add(node: Argument) -> TypeGuard[fx.Node]:
    return (isinstance(node, fx.Node) and node.op == "call_function" and node.target in ADDS and not node.kwargs
            and len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args))


def _summand(node: fx.Node, add: fx.Node) -> bool:
    """Whether `node` is only a part of the sum `add` (so that the sum can be flattened through it)."""
    return len(node.users) == 1 and next(iter(node.users)) is add


def _terms(root: fx.Node) -> tuple[list[tuple[fx.Node, fx.Node]], list[fx.Node]]:
    """The terms of the sum at `root` with the add each feeds, flattened through inner adds used only by it; and
    those adds."""
    terms, adds = [], []

    def visit(add: fx.Node) -> None:
        adds.append(add)
        for arg in add.args:
            if _is_add(arg) and _summand(arg, add):
                visit(arg)
            else:
                terms.append((arg, add))

    visit(root)
    return terms, adds


def _branch(term: fx.Node, modules: dict[str, nn.Module], owner: fx.Node, own: bool) -> Branch:
    """`term` as a linear map of its source: conv -> BN, BN alone, conv alone, or identity of `term` itself.

    Only a term that the sum alone reads (`own`, and feeding only `owner`) can be taken apart and removed.
    """
    own = own and _summand(term, owner)
    module = modules.get(str(term.target)) if term.op == "call_module" and own and len(term.args) == 1 else None
    if _usable_norm(module) and isinstance(term.args[0], fx.Node):
        before = term.args[0]
        conv = modules.get(str(before.target)) if before.op == "call_module" and len(before.users) == 1 else None
        if _usable_conv(conv) and len(before.args) == 1 and isinstance(before.args[0], fx.Node):
            return Branch(term, before.args[0], conv, module, (before,))
        return Branch(term, before, norm=module)
    if _usable_conv(module) and isinstance(term.args[0], fx.Node):
        return Branch(term, term.args[0], conv=module)
    return Branch(term, term)


def _usable_norm(module: nn.Module | None) -> TypeGuard[nn.BatchNorm2d]:
    return (type(module) is nn.BatchNorm2d and module.track_running_stats and module.running_mean is not None
            and module.running_var is not None)


def _usable_conv(module: nn.Module | None) -> TypeGuard[nn.Conv2d]:
    """A zero-padded conv, not dilated, whose odd kernel is centred by its padding (so kernels align when padded)."""
    return (type(module) is nn.Conv2d and module.padding_mode == "zeros" and module.dilation == (1, 1)
            and isinstance(module.padding, tuple)
            and all(k % 2 == 1 and p == k // 2 for k, p in zip(module.kernel_size, module.padding, strict=True)))


def _mergeable(branches: list[Branch]) -> bool:
    """At least two branches, one a conv; all convs alike but their kernels; identities only where shapes stay."""
    convs = [b.conv for b in branches if b.conv is not None]
    if len(branches) < 2 or not convs:
        return False
    first = convs[0]
    alike = all((c.in_channels, c.out_channels, c.stride, c.groups) == (first.in_channels, first.out_channels,
                                                                        first.stride, first.groups) for c in convs)
    identities = len(convs) < len(branches)
    return alike and (not identities or (first.in_channels == first.out_channels and first.stride == (1, 1)))


def _merge_sum(gm: fx.GraphModule, root: fx.Node, modules: dict[str, nn.Module]) -> None:
    """Replace each mergeable group of `root`'s terms (same source) by one conv, named as the group's first conv."""
    terms, adds = _terms(root)
    nodes = [term for term, _ in terms]
    branches = [_branch(term, modules, add, nodes.count(term) == 1) for term, add in terms]
    groups: dict[fx.Node, list[Branch]] = {}
    for branch in branches:
        groups.setdefault(branch.source, []).append(branch)
    mergeable = [group for group in groups.values() if _mergeable(group)]
    if not mergeable:
        return
    kept = [b.term for group in groups.values() if group not in mergeable for b in group]
    graph = gm.graph
    with graph.inserting_before(root):
        summands = []
        for group in mergeable:
            name = next(str((b.inner or (b.term,))[0].target) for b in group if b.conv is not None)
            _set_submodule(gm, name, _merged_conv(group))
            summands.append(graph.call_module(name, (group[0].source,)))
        total = summands[0]
        for term in [*summands[1:], *kept]:
            total = graph.call_function(operator.add, (total, term))
    root.replace_all_uses_with(total)
    for node in [*adds, *(n for group in mergeable for b in group if b.conv or b.norm for n in (b.term, *b.inner))]:
        graph.erase_node(node)


def _merged_conv(branches: list[Branch]) -> nn.Conv2d:
    """One conv (with bias) computing the sum of `branches`, in the dtype and device of their weights."""
    like = next(b.conv for b in branches if b.conv is not None)
    height, width = (max(b.conv.kernel_size[d] for b in branches if b.conv is not None) for d in (0, 1))
    size = (height, width)
    weight = torch.zeros(like.out_channels, like.in_channels // like.groups, *size, dtype=torch.float64,
                         device=like.weight.device)
    bias = torch.zeros(like.out_channels, dtype=torch.float64, device=like.weight.device)
    with torch.no_grad():
        for branch in branches:
            kernel, shift = _kernel_and_bias(branch, like)
            top, left = (size[0] - kernel.shape[2]) // 2, (size[1] - kernel.shape[3]) // 2
            weight[:, :, top:top + kernel.shape[2], left:left + kernel.shape[3]] += kernel
            bias += shift
    # torch types _ConvNd.stride as a tuple of any length; a Conv2d's is a pair
    conv = nn.Conv2d(like.in_channels, like.out_channels, size, stride=like.stride,  # pyright: ignore[reportArgumentType]
                     padding=(size[0] // 2, size[1] // 2), groups=like.groups, bias=True)
    conv.weight = nn.Parameter(weight.to(like.weight.dtype))
    conv.bias = nn.Parameter(bias.to(like.weight.dtype))
    return conv.to(like.weight.device).eval()


def _kernel_and_bias(branch: Branch, like: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The branch as a conv kernel and bias in fp64: its conv's, or a 1x1 unit kernel per group for identities."""
    if branch.conv is not None:
        kernel = branch.conv.weight.detach().double()
        bias = (branch.conv.bias.detach().double() if branch.conv.bias is not None
                else torch.zeros(like.out_channels, dtype=torch.float64, device=kernel.device))
    else:
        per_group = like.in_channels // like.groups
        kernel = torch.zeros(like.out_channels, per_group, 1, 1, dtype=torch.float64, device=like.weight.device)
        channels = torch.arange(like.out_channels, device=kernel.device)
        kernel[channels, channels % per_group, 0, 0] = 1  # output c reads input c: index c % per_group in its group
        bias = torch.zeros(like.out_channels, dtype=torch.float64, device=kernel.device)
    if branch.norm is None:
        return kernel, bias
    norm = branch.norm
    mean, var = norm.running_mean, norm.running_var
    assert mean is not None and var is not None  # _usable_norm takes only a norm that keeps its statistics
    weight = norm.weight.detach().double() if norm.weight is not None else None
    shift = norm.bias.detach().double() if norm.bias is not None else None
    return fuse_conv_bn_weights(kernel, bias, mean.double(), var.double(), norm.eps, weight, shift)
