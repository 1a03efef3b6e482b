"""The `resdsl` command: one module per subcommand, imported only when that command runs, and one way to fail.

Every error that reaches the top becomes one clean message and an exit status (`report`); a command fails
early with `common.fail()` or by raising SpecError, UsageError or OSError.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click import Context, Parameter
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption, _TyperParameter

import resdsl
from resdsl.backends import BACKENDS

# Each subcommand lives in resdsl.cli.<name> and has `register(app)`; `resdsl --help` lists them in this order.
COMMANDS = ("check", "info", "viz", "zoo", "fmt", "diff", "lsp", "build", "bench", "train", "eval", "plot")

DEBUG = "RESDSL_DEBUG"  # set to 1 for the Python traceback of an internal error

# Optional packages by top-level module: the name to show, and the extra that installs it (None: the
# command's own extra, below, which brings torch, numpy and Pillow).
OPTIONAL: dict[str, tuple[str, str | None]] = {
    "torch": ("torch", None),
    "numpy": ("numpy", None),
    "PIL": ("Pillow", None),
    "matplotlib": ("matplotlib", "plot"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "torchvision": ("torchvision", "images"),
    "pygls": ("pygls", "lsp"),
    "lsprotocol": ("lsprotocol", "lsp"),
    # the packages of each deployment backend, from its record
    **{module: (package, b.extra) for b in BACKENDS.values() for module, package in b.modules},
}
COMMAND_EXTRAS = {"build": "torch", "bench": "torch", "train": "train", "eval": "train", "plot": "plot", "lsp": "lsp"}
# What each command cannot start without: checked before it runs, so the missing extra is the first thing said.
REQUIRED = {"build": ("torch",), "bench": ("torch",), "train": ("torch", "numpy"), "eval": ("torch", "numpy"),
            "plot": ("matplotlib",), "lsp": ("pygls", "lsprotocol")}

# torch.onnx's op registry warns once per torchvision op (nms, roi_align, ...) when torchvision is absent, although
# no network here uses them: noise to a user of `build`/`bench --backend onnx`, so those records are dropped.
ONNX_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


def _not_torchvision_absent(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("torchvision is not installed. Skipping torchvision::")


class _LazyCommands(Mapping[str, TyperCommand]):
    """The subcommands by name; a command's module is imported the first time it is looked up."""

    def __init__(self) -> None:
        self._loaded: dict[str, TyperCommand] = {}

    def __getitem__(self, name: str) -> TyperCommand:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            single = typer.Typer(add_completion=False)
            importlib.import_module(f"resdsl.cli.{name}").register(single)
            single.registered_commands[0].cls = PlainHelpCommand
            command = typer.main.get_command(single)
            assert isinstance(command, PlainHelpCommand) and command.callback is not None  # as registered above
            command.help = unwrapped(command.help)
            command.callback = _requiring(REQUIRED.get(name, ()), command.callback)
            self._loaded[name] = command
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


def unwrapped(text: str | None) -> str | None:
    """A docstring's paragraphs each as one line, for the help to wrap at the terminal's width, not mid-sentence."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _requiring(modules: tuple[str, ...], callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback` that first raises ModuleNotFoundError for the first of `modules` that is not installed."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        for module in modules:
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return callback(*args, **kwargs)

    return run


# Metavars in --help, by the value's type where an option names none: `--batch N`, not `--batch <int>`.
METAVARS: dict[object, str] = {int: "N", float: "X", Path: "PATH"}


class PlainArgument(TyperArgument):
    """An argument shown by its metavar alone: `SPEC` in the usage line and the arguments panel (no `<str>`)."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name


def plain_metavar(param: Parameter) -> None:
    """Give `param` an ordinary metavar unless it names one: NAME for an argument, nothing for a flag, N for a
    whole number, X for a number, PATH for a path, `a|b|c` for choices, else the option's name in capitals."""
    if isinstance(param, TyperArgument):
        param.__class__ = PlainArgument  # the same object, rendered without its type
        param.metavar = param.metavar or (param.name or "").upper()
        return
    if not isinstance(param, TyperOption) or param.metavar is not None:
        return
    if param.is_flag:
        param.metavar = ""
        return
    descriptor = param.type_descriptor
    annotation = descriptor.annotation
    element = typing.get_args(annotation)[0] if descriptor.is_list else annotation
    if descriptor.is_choice:
        param.metavar = "|".join(str(getattr(choice, "value", choice)) for choice in descriptor.choices or ())
    else:
        param.metavar = METAVARS.get(element, (param.name or "value").upper())


# What typer's coercion returns unchanged when the command line gives a value of the type itself.
PLAIN_TYPES = (str, bool)
_NOT_PLAIN = object()


@dataclass(frozen=True)
class PlainCoercion(RuntimeParam):
    """typer's coercion of a str, a bool or a value through the parameter's `parser` (one, or a list of them),
    without the pydantic TypeAdapter typer builds for every parameter: importing pydantic and building them cost
    `resdsl check` ~0.1 s of CPU. A value not taken as it stands (bytes, "yes" for a bool, a parser's ValueError)
    goes to typer's own coercion, which words the error as always."""

    descriptor: TypeDescriptor

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        if self.descriptor.is_list:
            coerced: Any = [self._plain(item) for item in (value if isinstance(value, list | tuple) else [value])]
            plain = _NOT_PLAIN not in coerced
        else:
            coerced = self._plain(value)
            plain = coerced is not _NOT_PLAIN
        return coerced if plain else build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def _plain(self, value: Any) -> Any:
        if self.parameter_info.parser is not None:
            try:
                return self.parameter_info.parser(value)
            except (ValueError, AssertionError):
                return _NOT_PLAIN
        return value if type(value) is _element(self.descriptor) else _NOT_PLAIN


def _element(descriptor: TypeDescriptor) -> Any:
    """The type of one value: `str` for `list[str]`."""
    return typing.get_args(descriptor.annotation)[0] if descriptor.is_list else descriptor.annotation


def plain_coercion(param: Parameter) -> None:
    """Coerce `param` with `PlainCoercion` where it can (see there); other types keep typer's own coercion."""
    if not isinstance(param, _TyperParameter) or param._runtime_param is not None:
        return
    descriptor = param.type_descriptor
    if descriptor.is_file or (descriptor.parameter_info.parser is None and _element(descriptor) not in PLAIN_TYPES):
        return
    param._runtime_param = PlainCoercion(descriptor.parameter_info, descriptor.annotation, descriptor)


def plain_params(params: list[Parameter]) -> list[Parameter]:
    """`params` with ordinary metavars in --help and plain coercion (`plain_metavar`, `plain_coercion`)."""
    for param in params:
        plain_metavar(param)
        plain_coercion(param)
    return params


class PlainHelpCommand(TyperCommand):
    """A subcommand whose --help shows ordinary metavars and whose plain values skip pydantic (`plain_params`)."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        return plain_params(super().get_params(ctx))


class ResdslGroup(TyperGroup):
    """The top-level command: lazy subcommands, and `report` for whatever error escapes one."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        return plain_params(super().get_params(ctx))

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands()

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def invoke(self, ctx: Context) -> Any:
        logging.getLogger(ONNX_REGISTRY_LOGGER).addFilter(_not_torchvision_absent)
        words = [*ctx._protected_args, *ctx.args]  # the subcommand's name and arguments, before click takes them
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise  # exits, usage errors (exit 2) and a closed pipe are typer's to finish
        except (Exception, KeyboardInterrupt) as error:
            expected = isinstance(error, resdsl.SpecError | resdsl.UsageError)
            if os.environ.get(DEBUG, "") not in ("", "0") and not expected:
                raise
            raise typer.Exit(report(error, words)) from None


def _flags_only(error: resdsl.SpecError) -> bool:
    """Whether every diagnostic is about a command-line flag's value (`<--lr>:1:4`): a usage error."""
    return all(d.span is not None and d.span.path.startswith("<--") for d in error.diagnostics)


def report(error: BaseException, words: list[str]) -> int:
    """Print one plain account of `error` to stderr and return the exit status (1, 2 for usage, 130)."""
    command = " ".join(["resdsl", *words[:1]])
    if isinstance(error, resdsl.SpecError):
        typer.echo(error.render(), err=True)
        return 2 if _flags_only(error) else 1
    if isinstance(error, resdsl.UsageError):
        return _say(str(error), 2)
    if isinstance(error, KeyboardInterrupt):
        typer.echo(f"{command}: interrupted", err=True)
        return 130
    if (device := _out_of_memory(error)) is not None:
        return _say(f"the {device} ran out of memory during {command}; try a smaller batch, input or network")
    if isinstance(error, ImportError) and (missing := _missing_extra(error, words)):
        return _say(missing)
    if isinstance(error, OSError):
        reason = error.strerror or _first_line(error)
        path = error.filename2 or error.filename  # os.replace(temp, target): name the target
        return _say(f"{path}: {reason}" if path is not None else reason)
    return _say(f"internal error in {command} ({type(error).__name__}: {_first_line(error)}); "
                f"run it again with {DEBUG}=1 for the traceback, and please report it")


# torch's CPU allocator fails with a RuntimeError of this message, not MemoryError
CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"


def _out_of_memory(error: BaseException) -> str | None:
    """"GPU" or "machine" if `error` is that one's memory running out, else None."""
    if type(error).__name__ == "OutOfMemoryError":  # torch's, for GPUs
        return "GPU"
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and CPU_ALLOCATION_FAILED in str(error)):
        return "machine"
    return None


def _missing_extra(error: ImportError, words: list[str]) -> str | None:
    """`resdsl train needs torch: pip install 'resdsl[train]'` if `error` is an optional package's absence."""
    module = (error.name or "").partition(".")[0]
    if module not in OPTIONAL:
        return None
    package, extra = OPTIONAL[module]
    command = words[0] if words else ""
    if not isinstance(error, ModuleNotFoundError):  # installed but broken, e.g. a missing shared library
        return f"resdsl {command} needs {package}, which does not import here: {_first_line(error)}"
    if extra is None:
        backend = _option_value(words, "--backend") if command in ("build", "bench") else None
        # `build/bench --backend B` needs B's whole extra
        extra = BACKENDS[backend].extra if backend in BACKENDS else COMMAND_EXTRAS.get(command, "torch")
    return f"resdsl {command} needs {package}: pip install 'resdsl[{extra}]'"


def _option_value(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(f"{flag}="):
            return word.partition("=")[2]
    return None


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _say(message: str, status: int = 1) -> int:
    typer.echo(f"error: {message}", err=True)
    return status


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"resdsl {resdsl.__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="resdsl",
    cls=ResdslGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print resdsl's version and exit.")] = False,
) -> None:
    """A language and compiler for residual networks."""


def main() -> None:
    app(prog_name="resdsl")

