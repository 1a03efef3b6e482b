"""The public result of compiling a spec: `Network`, and `compile` that makes one."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from resdsl.diagnostics import Diagnostics, Note, SpecError
from resdsl.expr import Value
from resdsl.ir.build import lower_program
from resdsl.ir.graph import IRGraph
from resdsl.limits import MAX_ACTIVATION_BYTES, MAX_LITERAL_DIGITS, MAX_PARAM_BYTES
from resdsl.passes.count import BYTES_PER_ELEMENT, Counts, StageSummary, count
from resdsl.resolve import Program, check_override, check_seed, load, read_spec

if TYPE_CHECKING:
    import networkx as nx
    from torch.fx import GraphModule

    from resdsl.backends.pytorch import NetworkModule


class Network:
    """A checked network: the graph IR, its counts, and the program it came from."""

    def __init__(self, program: Program, graph: IRGraph, counts: Counts) -> None:
        self.program = program
        self.graph = graph
        self.counts = counts

    def to_networkx(self) -> nx.DiGraph:
        """The graph IR as a new networkx.DiGraph, for graph algorithms (the only use of networkx)."""
        return self.graph.to_networkx()

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def params(self) -> int:
        return self.counts.params

    @property
    def macs(self) -> int:
        return self.counts.macs

    @property
    def activation_bytes(self) -> int:
        return self.counts.activation_bytes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.known_shape("input")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.graph.known_shape("output")

    @property
    def stages(self) -> list[StageSummary]:
        return self.counts.stages

    @property
    def recipe(self):
        """The `train` section, validated (see resdsl.recipe)."""
        from resdsl.recipe import recipe_of

        return recipe_of(self.program)

    def with_input(self, shape: tuple[int, int, int] | str) -> Network:
        """The same spec re-checked for another input shape (e.g. `(1, 28, 28)` or `"1x28x28"`)."""
        from dataclasses import replace

        from resdsl import ast

        shape = _input_shape(shape)
        network = self.program.network
        span = network.input.span if network.input else network.span
        moved = replace(network, input=ast.InputShape(span, tuple(shape)))
        return check_program(replace(self.program, network=moved))

    @cached_property
    def torch_class(self) -> type[NetworkModule]:
        """The PyTorch module class of this network, generated once (see resdsl.backends.pytorch)."""
        from resdsl.backends.pytorch import module_class

        return module_class(self)

    @overload
    def to_torch(self, *, seed: int | None = None, zero_init_residual: bool = False,
                 features: list[str] | None = None, deploy: Literal[False] = False) -> NetworkModule: ...

    @overload
    def to_torch(self, *, seed: int | None = None, zero_init_residual: bool = False,
                 features: list[str] | None = None, deploy: Literal[True]) -> GraphModule: ...

    def to_torch(self, *, seed: int | None = None, zero_init_residual: bool = False,
                 features: list[str] | None = None, deploy: bool = False) -> NetworkModule | GraphModule:
        """A new, initialised PyTorch module of this network (see resdsl.backends.pytorch).

        `seed=None` draws the weights from torch's global RNG, as torchvision does; `features` names the
        layers or groups (`layer2`, `layer3.5.conv2`) whose outputs the module returns instead, as a dict.
        `deploy=True` gives the inference module instead (eval mode, an fx.GraphModule): parallel branches
        merged into one conv and BatchNorm folded (resdsl.backends.reparam), as `build` exports it.
        """
        if seed is not None:
            seed = check_seed(seed)
        if features is None:
            module = self.torch_class(seed=seed, zero_init_residual=zero_init_residual)
        else:
            from resdsl.backends.pytorch import feature_class

            module = feature_class(self, _feature_names(features))(seed=seed, zero_init_residual=zero_init_residual)
        if not deploy:
            return module
        from resdsl.backends.reparam import reparameterize

        return reparameterize(module.eval())

    def __repr__(self) -> str:
        return f"Network({self.name!r}, params={self.params:,}, macs={self.macs:,})"


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cycle collector: its full passes over the growing graph make deep nets superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile(source: str | Path, **params: Value) -> Network:
    """Parse, resolve, lower and check a spec (a path or spec text); raises SpecError, or UsageError for params."""
    given_as = "compile(..., {name}=...)"
    values = {name: check_override(name, value, given_as) for name, value in params.items()}
    return check_program(load(read_spec(source), values, given_as=given_as))


def _input_shape(shape: object) -> tuple[int, int, int]:
    """`shape` for `with_input`: three positive integers, as a tuple or `"CxHxW"`; else ValueError naming it. A size
    over the front end's limit is the spec check's to refuse (a SpecError at the input line, which `build --input`
    and `bench --input` report as the flag's)."""
    dims: object = shape
    if isinstance(shape, str):
        parts = shape.split("x")
        dims = tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None
    if (isinstance(dims, tuple | list) and len(dims) == 3
            and all(type(d) is int and 0 < d < 10**MAX_LITERAL_DIGITS for d in dims)):
        return (dims[0], dims[1], dims[2])
    raise ValueError(f"with_input: the shape must be three positive integers C, H, W (e.g. (3, 224, 224) or "
                     f"'3x224x224'), got {shape!r:.80}")


def _feature_names(features: object) -> tuple[str, ...]:
    """`features` for `to_torch`: a list of distinct layer or group names; else ValueError naming the argument."""
    if isinstance(features, str) or not isinstance(features, list | tuple):
        raise ValueError(f"to_torch(features=...) takes a list of layer or group names such as ['layer1', "
                         f"'layer2'], got {features!r:.80}")
    for name in features:
        if not isinstance(name, str):
            raise ValueError(f"to_torch(features=...): every name must be a string such as 'layer1', got {name!r:.80}")
    repeated = sorted({name for name in features if features.count(name) > 1})
    if repeated:
        raise ValueError(f"to_torch(features=...): '{repeated[0]}' is named twice; name each feature once")
    if not features:
        raise ValueError("to_torch(features=...) needs at least one name (or features=None for the classifier)")
    return tuple(features)


def lower_unchecked(source: str | Path, **params: Value) -> tuple[IRGraph, SpecError | None]:
    """The IR even when checks fail (nodes at fault carry an `error`), for drawing.

    A spec that does not parse or resolve still raises SpecError.
    """
    program = load(read_spec(source), params)
    diagnostics = Diagnostics(program.sources)
    with _without_gc():
        graph = lower_program(program, diagnostics)
    return graph, diagnostics.exception() if diagnostics.diagnostics else None


def check_program(program: Program) -> Network:
    """The Network of a loaded program (`resolve.load`): lowered to the graph IR, checked, counted and held to the
    memory limits; raises SpecError with every problem found."""
    diagnostics = Diagnostics(program.sources)
    with _without_gc():
        graph = lower_program(program, diagnostics)
        diagnostics.raise_if_any()
        counts = count(graph)
    _check_memory(graph, counts, program, diagnostics)
    diagnostics.raise_if_any()
    return Network(program, graph, counts)


def _check_memory(graph: IRGraph, counts: Counts, program: Program, diagnostics: Diagnostics) -> None:
    """Refuse a network whose fp32 activations (one image) or weights alone pass the limits, before any allocation."""
    network = program.network
    if counts.activation_bytes > MAX_ACTIVATION_BYTES and network.input is not None:  # counted from the input
        diagnostics.error(network.input.span, f"one image's activations come to {counts.activation_bytes / 2**30:,.1f} "
                                              f"GiB, over the limit of {MAX_ACTIVATION_BYTES // 2**30} GiB; use a "
                                              "smaller input")
    weights = BYTES_PER_ELEMENT * counts.params
    if weights > MAX_PARAM_BYTES:
        largest = max(graph.nodes, key=lambda name: graph.nodes[name].meta.params)
        node = graph.nodes[largest]
        note = Note(node.origin or node.span, f"the largest layer: {largest}, {node.meta.params:,} params")
        diagnostics.error(network.span, f"the weights come to {weights / 2**30:,.1f} GiB ({counts.params:,} params), "
                                        f"over the limit of {MAX_PARAM_BYTES // 2**30} GiB; use fewer or narrower "
                                        "layers", (note,))
