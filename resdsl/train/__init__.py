"""`resdsl train`: the loop (loop) and what it drives: the run folder (run_folder), the model and its step
(trainer), the metrics (run_metrics), checkpoints, torchrun and progress; imports torch.

The package is also the function `resdsl.train(spec, ...)` (resdsl.training.train): `resdsl.train` names this
package once any of its modules is imported, so calling the package calls the function.
"""

import sys
from types import ModuleType
from typing import Any

from resdsl.train.config import RunConfig
from resdsl.train.errors import RunError
from resdsl.train.loop import train as run

__all__ = ["RunConfig", "RunError", "run"]


class _CallablePackage(ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from resdsl.training import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
