from backends.fold import *
from backends.fold import _set_submodule as _set_submodule  # shared with reparam.py
