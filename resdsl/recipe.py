"""The `train` section of a spec as a validated `Recipe`, and its learning-rate schedule.

A spec without a `train` section gets the paper's CIFAR-10 recipe (section 4.2):
batch 128, SGD lr 0.1, momentum 0.9, weight decay 1e-4, lr x0.1 at 32k and 48k
iterations, 64k iterations, 45k/5k split, pad-4 crop and flip, per-pixel mean subtraction.

The paper's ImageNet recipe (section 3.4) is written out in specs/resnet34.res and
specs/resnet50.res: batch 256, lr 0.1 divided by 10 when the error plateaus
(`plateau(...)`), 600k iterations, scale augmentation with PCA lighting.

Units: `steps(m: f, ...)` milestones and `plateau(patience: p)` count in the unit of the run
length given beside the schedule (`iterations` or `epochs`). Warm-up comes in three forms:
`warmup lr 0.01, until_train_error 0.8` (the paper's ResNet-110: constant 0.01 until the
training error drops below 80%), `warmup lr 0.01, iterations 400` (constant 0.01 for 400
iterations), and `warmup iterations 400` (linear ramp from lr/400 up to lr).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from difflib import get_close_matches
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from resdsl import ast
from resdsl.diagnostics import Diagnostics
from resdsl.expr import EvalError, Value, describe, evaluate, literal
from resdsl.source import SourceFile, Span

# The records are plain frozen dataclasses, not pydantic models: every value is checked where it is read (the
# `Setting` parsers below), and importing pydantic and building its models cost `resdsl check` ~0.1 s of CPU
# (docs/benchmarks.md, "Whole processes").


@dataclass(frozen=True, slots=True)
class Schedule:
    """`steps(m: factor, ...)`, `plateau(factor: f, patience: p, threshold: t)`, `cosine()` or `constant()`.

    Milestones and patience count in `unit`. `plateau` multiplies the lr by `factor` each time the
    evaluation error has not improved (by the relative `threshold`) for more than `patience`.
    """

    kind: Literal["steps", "plateau", "cosine", "constant"] = "steps"
    milestones: tuple[tuple[int, float], ...] = ((32000, 0.1), (48000, 0.1))
    unit: Literal["iterations", "epochs"] = "iterations"
    factor: float = 0.1
    patience: int = 0
    threshold: float = 1e-4


@dataclass(frozen=True, slots=True)
class Warmup:
    """A warm-up: constant `lr` until `until_train_error` or for `iterations`, or linear if no lr."""

    lr: float | None = None
    iterations: int | None = None
    until_train_error: float | None = None

    def ends(self, train_error: float) -> bool:
        """Whether a training error this low ends an `until_train_error` warm-up."""
        return self.until_train_error is not None and train_error < self.until_train_error


@dataclass(frozen=True, slots=True)
class Augmentation:
    """Zero-pad by `pad`, random `crop` (default: the input size), horizontal `flip`, random-size `scale`,
    and AlexNet's PCA colour `lighting` (the standard deviation of its three coefficients; 0 for none)."""

    pad: int = 0
    crop: int | None = None
    flip: bool = False
    scale: tuple[int, int] | None = None
    lighting: float = 0.0


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything `resdsl train` needs to know that is not the architecture."""

    dataset: str = "cifar10"
    split: tuple[int | None, int] | None = (45000, 5000)
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: Schedule = Schedule()
    iterations: int | None = 64000
    epochs: int | None = None
    warmup: Warmup | None = None
    label_smoothing: float = 0.0
    augment: Augmentation | None = Augmentation(pad=4, crop=32, flip=True)
    mean_subtract: bool = True
    #: The settings a spec, an override or a record gave; the others are the defaults above. Bookkeeping, not a
    #: setting: left out of comparisons and records.
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (tuples as lists), as checkpoints, config.json and `info --json` record them."""
        return _as_json(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Recipe:
        """The recipe that `to_json` gave `record`; a setting it lacks takes its default. ValueError if a value
        is not of its setting's type."""
        recipe = _from_json(cls, record, "recipe")
        return replace(recipe, given=frozenset(key for key in record if key in SETTINGS))

    def updated(self, **changes: Any) -> Recipe:
        """A copy with `changes`, which count as given."""
        return replace(self, **changes, given=self.given | changes.keys())

    def total_iterations(self, steps_per_epoch: int) -> int:
        if self.iterations is not None:
            return self.iterations
        assert self.epochs is not None, "a recipe gives its length in iterations or in epochs"
        return self.epochs * steps_per_epoch

    def lr_at(self, iteration: int, steps_per_epoch: int, warming: bool = False, drops: int = 0) -> float:
        """The learning rate of step `iteration` (0-based).

        `warming` says an `until_train_error` warm-up has not ended yet, and `drops` how many times a
        `plateau` schedule has cut the lr so far; the loop tracks both (see `Plateau`).
        """
        warmup = self.warmup
        if warmup is not None:
            if warmup.until_train_error is not None and warming:
                assert warmup.lr is not None, "a warm-up until a training error has its lr (the parser checks)"
                return warmup.lr
            if warmup.iterations is not None and iteration < warmup.iterations:
                return warmup.lr if warmup.lr is not None else self.lr * (iteration + 1) / warmup.iterations
        scale = steps_per_epoch if self.schedule.unit == "epochs" else 1
        if self.schedule.kind == "cosine":
            total = self.total_iterations(steps_per_epoch)
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
        lr = self.lr
        if self.schedule.kind == "plateau":
            return lr * self.schedule.factor**drops
        if self.schedule.kind == "steps":
            for milestone, factor in self.schedule.milestones:
                if iteration >= milestone * scale:
                    lr *= factor
        return lr


def _as_json(value: object) -> Any:
    """`value` in JSON's terms: a record as an object of its settings, a tuple as a list."""
    if is_dataclass(value):
        return {f.name: _as_json(getattr(value, f.name)) for f in fields(value) if f.compare}
    if isinstance(value, tuple):
        return [_as_json(item) for item in value]
    return value


def _from_json(kind: Any, value: object, where: str) -> Any:
    """`value`, a JSON value, as the type `kind` (a record, a union, a literal, a tuple or a scalar type)."""
    if isinstance(kind, type) and is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is not an object")
        hints = get_type_hints(kind)
        return kind(**{f.name: _from_json(hints[f.name], value[f.name], f"{where}.{f.name}")
                       for f in fields(kind) if f.compare and f.name in value})
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _from_json(option, value, where)
            except ValueError:
                continue
    elif origin is Literal:
        if any(type(value) is type(word) and value == word for word in args):
            return value
    elif origin is tuple and isinstance(value, list):
        items = args[:1] * len(value) if args[-1:] == (...,) else args
        if len(items) == len(value):
            return tuple(_from_json(item, part, f"{where}[{i}]")
                         for i, (item, part) in enumerate(zip(items, value, strict=True)))
    elif kind is type(None):
        if value is None:
            return None
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(kind, type) and type(value) is kind:
        return value
    raise ValueError(f"{where} is not a valid value: {value!r}")


class Plateau:
    """When a `plateau` schedule cuts the lr: PyTorch's ReduceLROnPlateau (mode min, relative threshold)
    counted in iterations, so that the decision does not depend on how often the loop evaluates."""

    def __init__(self, schedule: Schedule, steps_per_epoch: int) -> None:
        self.schedule = schedule
        self.patience = schedule.patience * (steps_per_epoch if schedule.unit == "epochs" else 1)
        self.best: float | None = None
        self.since = 0  # iteration of the last improvement or cut
        self.drops = 0

    def observe(self, iteration: int, error: float) -> bool:
        """Record the evaluation error at `iteration`; True if the lr is cut now."""
        if self.schedule.kind != "plateau":
            return False
        if self.best is None or error < self.best * (1 - self.schedule.threshold):
            self.best, self.since = error, iteration
            return False
        if iteration - self.since > self.patience:
            self.drops += 1
            self.since = iteration
            return True
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "since": self.since, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since, self.drops = state["best"], int(state["since"]), int(state["drops"])


def recipe_of(program, overrides: Sequence[str | tuple[str, str]] = ()) -> Recipe:
    """The validated recipe of `program`'s train section, with `overrides` (setting lines) on top.

    Each override is a line as it would appear in the train section, e.g. "lr 0.05", or a pair
    (origin, line) where origin names it in diagnostics (e.g. "--lr"); it replaces the spec's
    setting of the same key. Raises SpecError with every bad setting.
    """
    from resdsl.parser import parse_setting

    reporter = Diagnostics(program.sources)
    spec_settings = program.network.train.settings if program.network.train else []
    extra: list[ast.Setting] = []
    for number, item in enumerate(overrides):
        origin, line = item if isinstance(item, tuple) else (f"override {number + 1}", item)
        path = f"<{origin}>" if program.sources.get(f"<{origin}>") is None else f"<{origin} {number + 1}>"
        extra.append(parse_setting(SourceFile(path=path, text=line), program.sources))
    layers = [spec_settings, extra]
    fields: dict[str, Any] = {}  # Recipe's fields, each of its type (SETTINGS[key].parse makes it)
    spans: dict[str, Span] = {}
    unit_of_layer: list[str | None] = []
    for settings in layers:
        seen: dict[str, Span] = {}
        for setting in settings:
            if setting.key in seen:
                reporter.error(setting.span, f"'{setting.key}' is set twice (first at {seen[setting.key]})")
                continue
            seen[setting.key] = setting.span
            value = _setting(setting, program.param_values, reporter)
            if value is _BAD:
                continue
            if setting.key in ("iterations", "epochs"):
                fields.pop("epochs" if setting.key == "iterations" else "iterations", None)
            fields[setting.key] = value
            spans[setting.key] = setting.span
        length_keys = [k for k in ("iterations", "epochs") if k in seen]
        if len(length_keys) == 2:
            reporter.error(seen["epochs"], "give either 'iterations' or 'epochs', not both")
        unit_of_layer.append(length_keys[0] if length_keys else None)
    reporter.raise_if_any()

    if "schedule" in fields:
        layer = next(i for i in (1, 0) if any(s.key == "schedule" for s in layers[i]))
        unit = unit_of_layer[layer] or ("epochs" if "epochs" in fields else "iterations")
        fields["schedule"] = replace(fields["schedule"], unit=unit)
    if "iterations" in fields or "epochs" in fields:
        fields.setdefault("iterations", None)
        fields.setdefault("epochs", None)
    recipe = Recipe(**fields, given=frozenset(fields))
    _check_recipe(recipe, spans, reporter)
    reporter.raise_if_any()
    return recipe


_BAD = object()


def _setting(setting: ast.Setting, env: dict[str, Value], reporter: Diagnostics) -> object:
    """The field value of one setting line, or _BAD after reporting why."""
    key = setting.key
    if key not in SETTINGS:
        close = get_close_matches(key, SETTINGS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(SETTINGS)})"
        reporter.error(setting.span, f"unknown train setting '{key}'{hint}")
        return _BAD
    try:
        return SETTINGS[key].parse(setting, env)
    except EvalError as error:
        reporter.error(error.span, error.message)
        return _BAD


def _value(expr: ast.Expr, env: dict[str, Value]) -> Value:
    return evaluate(expr, env)


def _word(expr: ast.Expr) -> str | None:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Literal) and isinstance(expr.value, str):
        return expr.value
    return None


def _only(setting: ast.Setting, what: str) -> ast.Expr:
    if len(setting.args) != 1 or setting.kwargs:
        raise EvalError(setting.span, f"'{setting.key}' takes one value: {what}")
    return setting.args[0]


def _number(expr: ast.Expr, env: dict[str, Value], what: str, *, integer: bool = False,
            positive: bool = False, low: float | None = None, high: float | None = None) -> int | float:
    value = _value(expr, env)
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise EvalError(expr.span, f"{what} must be {'an integer' if integer else 'a number'}, got {describe(value)}")
    if positive and value <= 0:
        raise EvalError(expr.span, f"{what} must be positive, got {describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        raise EvalError(expr.span, f"{what} must be {bounds}, got {describe(value)}")
    return value


def _integer(expr: ast.Expr, env: dict[str, Value], what: str, *, positive: bool = False,
             low: float | None = None) -> int:
    return int(_number(expr, env, what, integer=True, positive=positive, low=low))


def _dataset(setting: ast.Setting, env: dict[str, Value]) -> str:
    from resdsl.data import DATASETS

    dashed = _dashed_words(setting)
    if dashed is not None:
        raise EvalError(setting.span, f"unquoted, the '-' in {dashed} is a minus: write the dataset name "
                                      f"\"{dashed}\" or {dashed.replace('-', '_')}")
    expr = _only(setting, "a dataset name such as cifar10")
    name = _word(expr)
    if name is None:
        raise EvalError(expr.span, f"expected a dataset name, got {describe(_value(expr, env))}")
    name = next((record.name for record in DATASETS.values() if name in record.aliases), name)
    if name not in DATASETS:
        known = [n.replace("-", "_") for n in DATASETS]
        close = get_close_matches(name.replace("-", "_"), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"
        raise EvalError(expr.span, f"unknown dataset '{name}'{hint}")
    return name


def _dashed_words(setting: ast.Setting) -> str | None:
    """`fashion-mnist` if the setting's value is words joined by minus signs, written unquoted (which reads as
    `fashion` given the value `-mnist`, or as a subtraction), else None."""

    def words(expr: ast.Expr) -> str | None:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Binary) and expr.op == "-":
            left, right = words(expr.left), words(expr.right)
            return f"{left}-{right}" if left and right else None
        return None

    pieces = [*setting.args, *(part for kwarg in setting.kwargs
                                for part in (ast.Name(kwarg.span, kwarg.name), kwarg.value))]
    parts = [words(pieces[0]) if pieces else None,
             *(words(piece.operand) if isinstance(piece, ast.Neg) else None for piece in pieces[1:])]
    joined = "-".join(part for part in parts if part is not None)
    return joined if None not in parts and "-" in joined else None


def _split(setting: ast.Setting, env: dict[str, Value]) -> tuple[int | None, int] | None:
    if setting.kwargs or len(setting.args) not in (1, 2):
        raise EvalError(setting.span, "'split' takes TRAIN, VAL image counts (or VAL alone; 0 for no validation)")
    counts = [_integer(a, env, "a split size", low=0) for a in setting.args]
    if counts[-1] == 0:
        return None
    return (counts[0], counts[1]) if len(counts) == 2 else (None, counts[0])


def _int(what: str):
    def parse(setting: ast.Setting, env: dict[str, Value]) -> int:
        return _integer(_only(setting, what), env, f"'{setting.key}'", positive=True)
    return parse


def _float(low: float, high: float | None = None):
    def parse(setting: ast.Setting, env: dict[str, Value]) -> float:
        expr = _only(setting, "a number")
        return float(_number(expr, env, f"'{setting.key}'", low=low, high=high))
    return parse


def _lr(setting: ast.Setting, env: dict[str, Value]) -> float:
    return float(_number(_only(setting, "a number"), env, "the learning rate", positive=True))


def _flag(setting: ast.Setting, env: dict[str, Value]) -> bool:
    if not setting.args and not setting.kwargs:
        return True
    expr = _only(setting, "true or false")
    value = _value(expr, env)
    if not isinstance(value, bool):
        raise EvalError(expr.span, f"'{setting.key}' takes true or false, got {describe(value)}")
    return value


SCHEDULES = "steps(m: factor, ...), plateau(factor: f, patience: p), cosine() or constant()"


def _schedule(setting: ast.Setting, env: dict[str, Value]) -> Schedule:
    expr = _only(setting, SCHEDULES)
    if isinstance(expr, ast.Name) and expr.id in ("cosine", "constant"):
        return Schedule(kind=expr.id, milestones=())
    if not isinstance(expr, ast.Call) or expr.func not in ("steps", "plateau", "cosine", "constant"):
        raise EvalError(expr.span, f"a schedule is {SCHEDULES}")
    if expr.func == "plateau":
        return _plateau(expr, env)
    if expr.func != "steps":
        if expr.args:
            raise EvalError(expr.span, f"{expr.func}() takes no arguments")
        return Schedule(kind=expr.func, milestones=())
    milestones = []
    for arg in expr.args:
        if not isinstance(arg, ast.Pair):
            raise EvalError(arg.span, "each step is milestone: factor, as in steps(32000: 0.1)")
        at = _number(arg.key, env, "a milestone", integer=True, positive=True)
        factor = _number(arg.value, env, "a step factor", positive=True)
        if milestones and at <= milestones[-1][0]:
            raise EvalError(arg.key.span, f"milestones must increase; {at} follows {milestones[-1][0]}")
        milestones.append((at, float(factor)))
    return Schedule(kind="steps", milestones=tuple(milestones))


def _plateau(call: ast.Call, env: dict[str, Value]) -> Schedule:
    given: dict[str, ast.Expr] = {}
    names = ("factor", "patience", "threshold")
    for arg in call.args:
        name = _word(arg.key) if isinstance(arg, ast.Pair) else None
        if not isinstance(arg, ast.Pair) or name is None or name not in names:
            raise EvalError(arg.span, "plateau() takes factor: F, patience: P and threshold: T, "
                                      "as in plateau(factor: 0.1, patience: 25000)")
        if name in given:
            raise EvalError(arg.span, f"'{name}' is given twice")
        given[name] = arg.value
    if "patience" not in given:
        raise EvalError(call.span, "plateau() needs its patience: how long the error may fail to improve "
                                   "before the lr is cut, as in plateau(patience: 25000)")
    patience = _integer(given["patience"], env, "the patience", positive=True)
    factor = _number(given["factor"], env, "the plateau factor", positive=True) if "factor" in given else 0.1
    if factor >= 1:
        raise EvalError(given["factor"].span, f"the plateau factor must be below 1 (it cuts the lr), got {factor}")
    threshold = (_number(given["threshold"], env, "the plateau threshold", low=0.0, high=1.0)
                 if "threshold" in given else 1e-4)
    return Schedule(kind="plateau", milestones=(), factor=float(factor), patience=patience,
                    threshold=float(threshold))


def _kwargs(setting: ast.Setting, allowed: tuple[str, ...],
            flags: tuple[str, ...] = ()) -> tuple[dict[str, ast.Expr], set[str]]:
    """The `name value` pairs and the bare flag words of a setting, checked against `allowed`."""
    given: dict[str, ast.Expr] = {}
    bare: set[str] = set()
    for arg in setting.args:
        word = _word(arg)
        if word is None or word not in flags:
            raise EvalError(arg.span, f"'{setting.key}' takes {', '.join(allowed)}")
        bare.add(word)
    for kwarg in setting.kwargs:
        if kwarg.name not in allowed:
            close = get_close_matches(kwarg.name, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(allowed)})"
            raise EvalError(kwarg.span, f"'{setting.key}' has no option '{kwarg.name}'{hint}")
        if kwarg.name in given or kwarg.name in bare:
            raise EvalError(kwarg.span, f"'{kwarg.name}' is given twice")
        given[kwarg.name] = kwarg.value
    return given, bare


def _warmup(setting: ast.Setting, env: dict[str, Value]) -> Warmup | None:
    if len(setting.args) == 1 and not setting.kwargs and _word(setting.args[0]) == "none":
        return None
    given, _ = _kwargs(setting, ("lr", "iterations", "until_train_error"))
    lr = float(_number(given["lr"], env, "the warm-up lr", positive=True)) if "lr" in given else None
    iterations = (_integer(given["iterations"], env, "warm-up iterations", positive=True)
                  if "iterations" in given else None)
    until = (float(_number(given["until_train_error"], env, "until_train_error", positive=True, high=1.0))
             if "until_train_error" in given else None)
    if (iterations is None) == (until is None):
        raise EvalError(setting.span, "a warm-up needs exactly one of 'iterations N' or 'until_train_error E'")
    if until is not None and lr is None:
        raise EvalError(setting.span, "a warm-up until a training error needs its 'lr'")
    return Warmup(lr=lr, iterations=iterations, until_train_error=until)


def _augment(setting: ast.Setting, env: dict[str, Value]) -> Augmentation | None:
    if len(setting.args) == 1 and not setting.kwargs and _word(setting.args[0]) == "none":
        return None
    given, bare = _kwargs(setting, ("pad", "crop", "flip", "scale", "lighting"), flags=("flip",))
    pad = _integer(given["pad"], env, "'pad'", low=0) if "pad" in given else 0
    crop = _integer(given["crop"], env, "'crop'", positive=True) if "crop" in given else None
    flip = "flip" in bare or ("flip" in given and _flag_value(given["flip"], env))
    scale = None
    if "scale" in given:
        expr = given["scale"]
        bounds = [a for a in expr.args if not isinstance(a, ast.Pair)] if isinstance(expr, ast.Call) else []
        if not isinstance(expr, ast.Call) or expr.func != "range" or len(expr.args) != 2 or len(bounds) != 2:
            raise EvalError(expr.span, "'scale' is range(low, high) of the crop's side, e.g. range(256, 480)")
        low, high = (_integer(a, env, "a scale bound", positive=True) for a in bounds)
        if low > high:
            raise EvalError(expr.span, f"scale range({low}, {high}) is empty")
        scale = (low, high)
        if crop is not None and crop > low:
            raise EvalError(expr.span, f"the crop {crop} must fit the shorter side: scale's low bound is {low}")
        if pad:
            raise EvalError(expr.span, "'scale' and 'pad' do not combine; a rescaled image is cropped, not padded")
    lighting = (float(_number(given["lighting"], env, "'lighting'", low=0.0, high=1.0))
                if "lighting" in given else 0.0)
    return Augmentation(pad=pad, crop=crop, flip=flip, scale=scale, lighting=lighting)


def _flag_value(expr: ast.Expr, env: dict[str, Value]) -> bool:
    value = _value(expr, env)
    if not isinstance(value, bool):
        raise EvalError(expr.span, f"expected true or false, got {describe(value)}")
    return value


def _write_number(value: float) -> str:
    return repr(float(value))


def _write_optional(write: Callable[[Any], str]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else write(value)


def _write_split(split: tuple[int | None, int] | None) -> str:
    if split is None:
        return "0"
    train, val = split
    return f"{val}" if train is None else f"{train}, {val}"


def _write_schedule(schedule: Schedule) -> str:
    if schedule.kind == "steps":
        return "steps(" + ", ".join(f"{at}: {_write_number(factor)}" for at, factor in schedule.milestones) + ")"
    if schedule.kind == "plateau":
        return (f"plateau(factor: {_write_number(schedule.factor)}, patience: {schedule.patience}, "
                f"threshold: {_write_number(schedule.threshold)})")
    return f"{schedule.kind}()"


def _write_warmup(warmup: Warmup | None) -> str:
    if warmup is None:
        return "none"
    parts = [f"lr {_write_number(warmup.lr)}"] if warmup.lr is not None else []
    if warmup.iterations is not None:
        parts.append(f"iterations {warmup.iterations}")
    if warmup.until_train_error is not None:
        parts.append(f"until_train_error {_write_number(warmup.until_train_error)}")
    return ", ".join(parts)


def _write_augment(augment: Augmentation | None) -> str:
    if augment is None:
        return "none"
    parts = [f"pad {augment.pad}"] if augment.pad else []
    if augment.crop is not None:
        parts.append(f"crop {augment.crop}")
    if augment.flip:
        parts.append("flip")
    if augment.scale is not None:
        parts.append(f"scale range({augment.scale[0]}, {augment.scale[1]})")
    if augment.lighting:
        parts.append(f"lighting {_write_number(augment.lighting)}")
    return ", ".join(parts)


def _dataset_names() -> str:
    from resdsl.data import DATASETS

    names = list(DATASETS)
    return f"{', '.join(names[:-1])} or {names[-1]}."


@dataclass(frozen=True)
class Setting:
    """One train-section setting: the `Recipe` field `key`, how a line is read (and checked), how the field is
    written back as a line, and its `--KEY` flag of `resdsl train`.

    `flag` is the flag's type; a `str` flag whose text is the line itself (a schedule) has `flag_is_line`, any
    other flag value becomes a line through `write`.
    """

    key: str
    parse: Callable[[ast.Setting, dict[str, Value]], object]
    write: Callable[[Any], str | None]  # None: the line is left out
    help: str
    flag: type[int] | type[float] | type[str] | type[bool]
    flag_is_line: bool = False

    def line(self, flag_value: object) -> str:
        """The train-section line that the flag's value stands for (text given for a number or a flag, as
        `resdsl.train(settings={"lr": "0.05"})` may, is the line's text)."""
        as_text = self.flag_is_line or (isinstance(flag_value, str) and self.flag is not str)
        return f"{self.key} {flag_value if as_text else self.write(flag_value)}"


#: Every train setting, in the order spec.res writes them. Each is a `Recipe` field of the same name.
SETTINGS: dict[str, Setting] = {setting.key: setting for setting in (
    Setting("dataset", _dataset, literal, _dataset_names(), str),
    Setting("split", _split, _write_split, '"TRAIN, VAL" image counts, "VAL", or "0" for none.', str,
            flag_is_line=True),
    Setting("batch", _int("a batch size"), str, "Batch size (over all processes).", int),
    Setting("lr", _lr, _write_number, "Base learning rate.", float),
    Setting("momentum", _float(0.0, 1.0), _write_number, "SGD momentum.", float),
    Setting("weight_decay", _float(0.0), _write_number, "L2 weight decay.", float),
    Setting("nesterov", _flag, literal, "Nesterov momentum.", bool),
    Setting("schedule", _schedule, _write_schedule, '"steps(32000: 0.1, 48000: 0.1)", "cosine()" or "constant()".',
            str, flag_is_line=True),
    Setting("iterations", _int("a number of iterations"), _write_optional(str), "Train this many iterations.", int),
    Setting("epochs", _int("a number of epochs"), _write_optional(str), "Train this many epochs.", int),
    Setting("warmup", _warmup, _write_warmup, '"lr 0.01, until_train_error 0.8", "iterations 400" or "none".', str,
            flag_is_line=True),
    Setting("label_smoothing", _float(0.0, 1.0), _write_number, "Label smoothing.", float),
    Setting("augment", _augment, _write_augment, '"pad 4, crop 32, flip" or "none".', str, flag_is_line=True),
    Setting("mean_subtract", _flag, literal, "Per-pixel mean subtraction.", bool),
)}


def _check_recipe(recipe: Recipe, spans: dict[str, Span], reporter: Diagnostics) -> None:
    """Checks that involve more than one setting."""
    if recipe.nesterov and recipe.momentum == 0:
        reporter.error(spans.get("nesterov"), "nesterov needs a momentum above 0")
    if recipe.warmup and recipe.warmup.lr is not None and recipe.warmup.lr > recipe.lr:
        reporter.error(spans.get("warmup"), f"the warm-up lr {recipe.warmup.lr} is above the lr {recipe.lr}")


def summary_lines(recipe: Recipe) -> list[str]:
    """The recipe in words, one `key  text` line per aspect, for `resdsl info`."""
    length = (f"{recipe.iterations:,} iterations" if recipe.iterations is not None else f"{recipe.epochs:,} epochs")
    split = "no validation split" if recipe.split is None else (
        f"{recipe.split[1]:,} training images held out for validation"
        + (f", {recipe.split[0]:,} kept for training" if recipe.split[0] is not None else ""))
    optimizer = (f"SGD, batch {recipe.batch}, momentum {recipe.momentum:g}{' (Nesterov)' if recipe.nesterov else ''}, "
                 f"weight decay {recipe.weight_decay:g}")
    if recipe.label_smoothing:
        optimizer += f", label smoothing {recipe.label_smoothing:g}"
    rows = [("dataset", f"{recipe.dataset} ({split})"), ("optimizer", optimizer),
            ("lr", f"{recipe.lr:g}, {_schedule_words(recipe.schedule)}"), ("length", length)]
    if recipe.warmup is not None:
        rows.append(("warm-up", _warmup_words(recipe.warmup, recipe.lr)))
    rows.append(("augment", _augment_words(recipe.augment)))
    rows.append(("input", "per-pixel mean subtracted" if recipe.mean_subtract else "pixels in [0, 1], no mean"))
    width = max(len(key) for key, _ in rows)
    return [f"{key.ljust(width)}  {text}" for key, text in rows]


def _schedule_words(schedule: Schedule) -> str:
    unit = schedule.unit
    if schedule.kind == "plateau":
        return (f"times {schedule.factor:g} each time the evaluation error has not improved for "
                f"{schedule.patience:,} {unit}")
    if schedule.kind == "steps":
        if not schedule.milestones:
            return "constant"
        return "times " + ", ".join(f"{factor:g} at {at:,}" for at, factor in schedule.milestones) + f" {unit}"
    return {"cosine": "cosine decay to 0", "constant": "constant"}[schedule.kind]


def _warmup_words(warmup: Warmup, lr: float) -> str:
    if warmup.until_train_error is not None:
        return f"lr {warmup.lr:g} until the training error is below {100 * warmup.until_train_error:g}%"
    if warmup.lr is not None:
        return f"lr {warmup.lr:g} for {warmup.iterations:,} iterations"
    assert warmup.iterations is not None, "a warm-up without an lr is linear over its iterations"
    return f"linear from {lr / warmup.iterations:g} to {lr:g} over {warmup.iterations:,} iterations"


def _augment_words(augment: Augmentation | None) -> str:
    if augment is None:
        return "none"
    parts = []
    if augment.scale is not None:
        parts.append(f"shorter side resized to a random size in [{augment.scale[0]}, {augment.scale[1]}]")
    if augment.pad:
        parts.append(f"zero-pad {augment.pad}")
    crop = f"{augment.crop}x{augment.crop}" if augment.crop else "input-size"
    parts.append(f"random {crop} crop")
    if augment.flip:
        parts.append("horizontal flip")
    if augment.lighting:
        parts.append(f"PCA lighting (std {augment.lighting:g})")
    return ", ".join(parts)
