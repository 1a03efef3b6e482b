"""`resdsl train`: the loop and what it needs (checkpoints, torchrun, progress); imports torch.

The package is also the function `resdsl.train(spec, ...)` (resdsl.training.train): `resdsl.train` names this
package once any of its modules is imported, so calling the package calls the function.
"""

import sys
from types import ModuleType
from typing import Any

from resdsl.train.config import RunConfig
from resdsl.train.loop import RunError
from resdsl.train.loop import train as run

__all__ = ["RunConfig", "RunError", "run"]


class _CallablePackage(ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from resdsl.training import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
