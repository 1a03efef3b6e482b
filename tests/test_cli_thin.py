"""The commands in resdsl/cli only parse flags, call the library and print: each command function, signature and
decorators included, is at most 40 lines (issue 20), so logic that grows goes to a library module."""

import ast
from pathlib import Path

import resdsl.cli

CLI = Path(resdsl.cli.__file__).parent
LIMIT = 40


def command_functions() -> dict[str, ast.FunctionDef]:
    """Every function that a module's `register` hands to `app.command(...)`, by `module:function`."""
    found = {}
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
                    and isinstance(node.func.func, ast.Attribute) and node.func.func.attr == "command"):
                name = node.args[0]
                assert isinstance(name, ast.Name), f"{path.name}: app.command(...) is given {ast.dump(name)}"
                found[f"{path.name}:{name.id}"] = functions[name.id]
    return found


def test_every_command_is_found() -> None:
    names = {key.split(":")[1] for key in command_functions()}
    assert names >= {"bench", "build", "check", "diff", "evaluate", "fmt", "info", "lsp", "plot", "train", "viz",
                     "zoo"}


def test_each_command_function_is_at_most_40_lines() -> None:
    def lines(function: ast.FunctionDef) -> int:
        first = min([function.lineno, *(decorator.lineno for decorator in function.decorator_list)])
        assert function.end_lineno is not None
        return function.end_lineno - first + 1

    long = {name: lines(function) for name, function in command_functions().items() if lines(function) > LIMIT}
    assert not long, f"command functions over {LIMIT} lines (move their logic into the library): {long}"
