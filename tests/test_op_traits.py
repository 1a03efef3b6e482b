"""Op traits: what passes, diagrams and backends know of an op, declared on its class instead of compared by name."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from resdsl.ir.ops import OPS, TRAITS, Op

ROOT = Path(__file__).resolve().parent.parent
STRUCTURE = {"name", "doc", "signature", "arity"}  # what an op is, not a trait

# The traits by hand, from what each op computes (PyTorch's modules and the paper's figures), not from the classes.
WEIGHTED = {"conv", "channel_conv", "linear", "batchnorm", "groupnorm"}
IMPLIED = {"batchnorm", "groupnorm", "relu", "flatten", "identity", "dropout", "output"}
NOT_FRESH = {"input", "output", "relu", "sigmoid", "softmax", "slice_channels", "subsample", "flatten", "identity",
             "dropout"}
KEEPS_ZERO = {"relu", "silu", "gelu", "hard_swish", "avgpool", "mul", "slice_channels", "subsample", "pad_channels",
              "flatten", "identity", "dropout"}
ENDS_BRANCH = {"conv", "batchnorm", "groupnorm"}  # zero weight, zero output (conv: without a bias)
INTERNAL = {"input", "output"}
JOINS = {"add": "+", "mul": "×", "concat": "‖"}

# What the emitter still compares: words of the language it parses (`add shortcut`, a shortcut case's `identity`),
# left to the emitter's restructuring (issue 20).
SPEC_WORDS = {("resdsl/ir/emit.py", "add"), ("resdsl/ir/emit.py", "identity")}


def _traits(name: str) -> set[str]:
    return {trait for trait in TRAITS if getattr(OPS[name], trait) is True}


def test_every_trait_has_a_documented_default_on_the_base_class():
    source = inspect.getsource(Op)
    for trait in TRAITS:
        line = next((line for line in source.splitlines() if line.strip().startswith(f"{trait}: ClassVar[")), None)
        assert line is not None and " = " in line and "  # " in line, trait


def test_every_class_attribute_the_base_declares_is_a_trait_or_what_the_op_is():
    declared = set(Op.__annotations__)
    assert declared - STRUCTURE == set(TRAITS)


def test_every_op_has_every_trait_with_its_type():
    for name, op in OPS.items():
        for trait in TRAITS:
            value = getattr(type(op), trait)
            assert isinstance(value, str | None) if trait == "joins" else isinstance(value, bool), (name, trait)


def test_the_traits_of_each_op_are_what_it_computes():
    for name, op in OPS.items():
        expected = {trait for trait, names in (("weighted", WEIGHTED), ("implied", IMPLIED),
                                               ("keeps_zero", KEEPS_ZERO), ("ends_branch", ENDS_BRANCH),
                                               ("internal", INTERNAL)) if name in names}
        expected |= {"fresh"} if name not in NOT_FRESH else set()
        assert _traits(name) == expected, name
        assert op.joins == JOINS.get(name), name


def _sources() -> list[Path]:
    files = sorted((ROOT / "resdsl").rglob("*.py")) + sorted((ROOT / "backends").rglob("*.py"))
    return [path for path in files if (ROOT / "resdsl" / "ir" / "ops") not in path.parents]


def _strings(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [text for element in node.elts for text in _strings(element)]
    return []


def _op_names_compared(tree: ast.AST) -> list[tuple[int, str]]:
    """Op names in comparisons (`== "conv"`, `in ("input", "output")`), match cases, and tables keyed by them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found += [(node.lineno, s) for side in (node.left, *node.comparators) for s in _strings(side) if s in OPS]
        elif isinstance(node, ast.MatchValue):
            found += [(node.lineno, s) for s in _strings(node.value) if s in OPS]
        elif isinstance(node, ast.Dict):
            keys = [s for key in node.keys if key is not None for s in _strings(key)]
            if len(keys) > 1 and all(key in OPS for key in keys):
                found += [(node.lineno, key) for key in keys]
    return found


def test_the_scan_finds_op_names_compared_as_strings():
    code = 'a = op.name == "conv"\nb = n not in ("input", "output")\nc = {"add": "+", "mul": "×"}\nd = x == "width"'
    assert sorted(s for _, s in _op_names_compared(ast.parse(code))) == ["add", "conv", "input", "mul", "output"]


def test_no_op_name_is_compared_as_a_string_outside_the_op_classes():
    found = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        found += [f"{relative}:{line}: {name}" for line, name in _op_names_compared(ast.parse(path.read_text()))
                  if (relative, name) not in SPEC_WORDS]
    assert found == []


def test_diagrams_backends_and_passes_read_only_declared_class_attributes_of_ops():
    """A class attribute of an op read anywhere (`node.op.joins`, `op.fresh`) is a trait or what the op is."""
    attributes = {name for name in vars(Op) if not name.startswith("_") and not callable(getattr(Op, name))}
    attributes |= {name for op in OPS.values() for name in vars(type(op))
                   if not name.startswith("_") and not callable(getattr(type(op), name))}
    read = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute | ast.Name)
                    and (node.value.attr if isinstance(node.value, ast.Attribute) else node.value.id) == "op"):
                read.add(node.attr)
    assert read & attributes <= set(TRAITS) | STRUCTURE
    assert set(TRAITS) <= read  # and every trait is read somewhere
