"""resdsl: a language and compiler for residual networks."""

from resdsl import zoo
from resdsl.diagnostics import Diagnostic, SpecError
from resdsl.network import Network, compile
from resdsl.resolve import UsageError

__all__ = ["Diagnostic", "Network", "SpecError", "UsageError", "compile", "zoo"]
__version__ = "0.1.0"
