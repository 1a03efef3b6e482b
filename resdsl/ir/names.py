"""The one rule for names that become module paths: every part an attribute PyTorch can hold and code can call.

A part is a Python identifier that is not a keyword and does not start with `_`, or a number
(`layer1.0`); it must not shadow a member of `nn.Module` (`forward`, `to`, `training`, ...) or of the
classes resdsl generates. The list is kept here so that checking a spec needs no torch;
tests/test_names.py proves it covers torch's.
"""

from __future__ import annotations

import keyword
from functools import lru_cache

from resdsl.limits import MAX_PATH_PARTS

# dir(torch.nn.Module()) on torch 2.14, plus the members of torch.fx.GraphModule (resdsl's generated
# modules are GraphModules: `graph`, `code`, `recompile`, ...) and the container methods of nn.Sequential
# (stages) that a block label could otherwise hide.
MODULE_MEMBERS = frozenset({
    "T_destination", "add_module", "append", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "code", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extend", "extra_repr", "float",
    "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "graph", "half", "insert",
    "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "pop", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "set_extra_state",
    "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad", "feature_info", "add_submodule", "delete_all_unused_submodules", "delete_submodule", "meta",
    "print_readable", "recompile", "shape_env", "to_folder",
})


@lru_cache(maxsize=4096)  # a deep path's parts are checked again for each layer under it
def check_part(part: str) -> str | None:
    """Why `part` cannot be one step of a module path, or None."""
    if part.isdigit():
        return None
    if not part.isidentifier():
        return f"'{part}' is not a name (letters, digits and '_', not starting with a digit)"
    if keyword.iskeyword(part):
        return f"'{part}' is a Python keyword, which cannot name a module attribute"
    if part.startswith("_"):
        return f"'{part}' starts with '_', which nn.Module keeps for its own attributes"
    if part in MODULE_MEMBERS:
        return f"'{part}' would hide nn.Module's member of that name"
    return None


def check_path(path: str, what: str = "layer") -> str | None:
    """Why a dotted path cannot name a module (a layer, or a stage), or None."""
    parts = path.count(".") + 1
    if parts > MAX_PATH_PARTS:
        return (f"a {what}'s path of {parts:,} dotted parts is over the limit of {MAX_PATH_PARTS}; nest its "
                "labels less deep")
    for part in path.split("."):
        problem = check_part(part)
        if problem:
            return f"cannot name a {what} '{path}': {problem}"
    return None
