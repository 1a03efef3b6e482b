"""resdsl: a language and compiler for residual networks."""

from __future__ import annotations

import importlib
from typing import Any

from resdsl import zoo
from resdsl.diagnostics import Diagnostic, SpecError
from resdsl.network import Network, compile
from resdsl.resolve import UsageError

# What the CLI does, as functions: imported on first use, so `import resdsl` loads no torch (docs/python-api.md).
_LAZY = {"build": "resdsl.deploy", "BuildError": "resdsl.deploy", "BuildResult": "resdsl.deploy",
         "evaluate": "resdsl.evaluation", "EvalResult": "resdsl.evaluation", "TrainResult": "resdsl.training",
         "train": "resdsl.train"}  # the package resdsl.train is callable: resdsl.training.train

__all__ = ["BuildError", "BuildResult", "Diagnostic", "EvalResult", "Network", "SpecError", "TrainResult",
           "UsageError", "build", "compile", "evaluate", "train", "zoo"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'resdsl' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__ == f"resdsl.{name}" else getattr(module, name)
