"""What `resdsl check` pays for at start-up: only what checking needs (docs/benchmarks.md, "Whole processes")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from conftest import modules_a_command_imports
from typer._click import Context, Parameter
from typer.core import TyperCommand
from typer.testing import CliRunner

from resdsl.cli.app import PlainHelpCommand, plain_metavar

SPECS = Path(__file__).resolve().parent.parent / "specs"

# A network without a `train` section (its check needs no `resdsl.recipe`).
# Its params by hand: conv 3*4*9 = 108, batchnorm 2*4 = 8, linear 4*2 + 2 = 10.
UNTRAINED = """\
network tiny {
  input 3x8x8
  stem {
    conv 3x3, 4
    batchnorm
    relu
  }
  head {
    avgpool
    fc: linear 2
  }
}
"""


def test_check_imports_neither_pydantic_nor_typers_adapters(tmp_path: Path):
    spec = tmp_path / "tiny.res"
    spec.write_text(UNTRAINED)
    out, imported = modules_a_command_imports(["check", str(spec)], ("pydantic", "typer._adapters"))
    assert out.startswith(f"{spec}: ok (tiny, 126 params, ")
    assert imported == []


def test_check_of_a_spec_with_a_train_section_imports_no_pydantic():
    # resnet152 inherits resnet50's `train` section, the paper's ImageNet recipe, so checking it reads a Recipe.
    out, imported = modules_a_command_imports(["check", str(SPECS / "resnet152.res")], ("pydantic", "resdsl.recipe"))
    assert out.startswith(f"{SPECS / 'resnet152.res'}: ok (resnet152, 60,192,808 params, ")
    assert imported == ["resdsl.recipe"]


def _number(value: str) -> int:
    return int(value)  # ValueError for "x": typer's own coercion words it


class TypersCoercion(TyperCommand):
    """The reference: PlainHelpCommand's metavars, typer's own coercion."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)
        for param in params:
            plain_metavar(param)
        return params


def _run(cls: type[TyperCommand], args: list[str]) -> tuple[int, str, str]:
    app = typer.Typer(add_completion=False)

    @app.command(cls=cls)
    def show(counts: Annotated[list[int], typer.Argument(parser=_number)], name: str = "a",
             names: Annotated[list[str] | None, typer.Option("--names")] = None, flag: bool = False,
             level: int = 1) -> None:
        typer.echo(repr((counts, name, names, flag, level)))

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args", [["1", "2", "--name", "b", "--names", "c", "--names", "d", "--flag", "--level", "3"],
                                  ["1"], ["1", "x"], ["x"], ["1", "--level", "x"], ["1", "--name"], [""]])
def test_plain_coercion_gives_what_typers_own_gives(args: list[str]):
    assert _run(PlainHelpCommand, args) == _run(TypersCoercion, args)
