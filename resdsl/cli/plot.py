"""`resdsl plot RUN_DIR... -o fig.png`: training curves in the style of the paper's Figure 6."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated

import typer

from resdsl import metrics
from resdsl.cli.common import fail, kind, not_empty, output_file, written
from resdsl.files import reason, writable_folder

#: What matplotlib writes without extra software (pgf needs LaTeX; raw and rgba are not image files).
FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")
MAX_POINTS = 1_000_000  # per run: a point every iteration of a million-iteration run

Curve = list[tuple[int, float]]


def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (each with metrics.jsonl).", show_default=False,
                                               parser=not_empty("RUN_DIR", "a run's folder"))],
    output: Annotated[Path, typer.Option("--output", "-o", help=f"The figure to write ({', '.join(FORMATS)}).",
                                         parser=not_empty("-o", "a file to write"))] = Path("curves.png"),
    title: Annotated[str | None, typer.Option(help="A title above the plot.")] = None,
) -> None:
    """Training error dashed, test error bold, against iterations; one colour per run."""
    suffix = output.suffix.lstrip(".").lower() or "png"
    if suffix not in FORMATS:
        fail(f"-o {output}: cannot write .{suffix} figures; use one of {', '.join(f'.{f}' for f in FORMATS)}", 2)
    if output.is_dir():
        fail(f"-o {output} is a directory; give a file name, e.g. {output / 'curves.png'}")
    output_file(output, "-o")
    try:
        writable_folder(output.parent)
    except OSError as error:
        fail(f"cannot write {output}: {reason(error)}")
    curves = {run: read_curves(run) for run in runs}
    figure = _draw(curves, _names(runs), title)
    with written(output) as file:
        figure.savefig(file, format=suffix)
    for run, (train, test) in curves.items():  # said once the figure is written: a failed write says only why
        for line in single_points(run, train, test):
            typer.echo(f"note: {line}", err=True)
    typer.echo(f"wrote {output}")


def read_curves(run: Path) -> tuple[Curve, Curve]:
    """(iteration, train error %) and (iteration, test error %) points of a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if isinstance(error, FileNotFoundError | NotADirectoryError):
            fail(f"{run} is not a run directory: it has no metrics.jsonl")
        fail(f"cannot read {path}: {reason(error)}")
    if not stat.S_ISREG(mode):
        fail(f"{path} is {kind(mode)}, not a metrics file")
    train: Curve = []
    test: Curve = []
    try:
        for line in metrics.lines(path):
            if line.entry is None:
                if not line.complete:  # the run is still writing its last line
                    continue
                fail(f"{path}:{line.number}: not a metrics record: {line.problem}")
            if len(train) + len(test) >= MAX_POINTS:
                fail(f"{path}:{line.number}: more than {MAX_POINTS:,} points to plot; plot reads no more")
            entry = line.entry
            if entry["kind"] == "train" and entry.get("train_error") is not None:
                train.append((entry["iteration"], 100 * entry["train_error"]))
            if entry["kind"] == "eval" and entry.get("test_error") is not None:
                test.append((entry["iteration"], 100 * entry["test_error"]))
    except OSError as error:
        fail(f"cannot read {path}: {reason(error)}")
    if not train and not test:
        fail(f"{path} has no training or test error to plot yet")
    return train, test


def single_points(run: Path, train: Curve, test: Curve) -> list[str]:
    """Why a curve of `run` is a single point: it was logged or evaluated once."""
    notes = []
    for name, curve, flag in (("training", train, "--log-every"), ("test", test, "--eval-every")):
        if len(curve) == 1:
            notes.append(f"{run}'s {name} error is a single point (iteration {curve[0][0]:,}): the run recorded it "
                         f"once; train with a {flag} below its length for a curve")
    return notes


def _draw(curves: dict[Path, tuple[Curve, Curve]], names: dict[Path, str], title: str | None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for index, (run, (train, test)) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        if train:
            axes.plot(*zip(*train, strict=True), linestyle="--", linewidth=0.9, color=colour)
        if test:
            axes.plot(*zip(*test, strict=True), linestyle="-", linewidth=2.2, color=colour, label=names[run],
                      marker="o" if len(test) == 1 else None)
        elif train:
            axes.plot([], [], linestyle="-", linewidth=2.2, color=colour, label=names[run])
    axes.set_xlabel("iter.")
    axes.set_ylabel("error (%)")
    last = max(point[0] for train, test in curves.values() for point in train + test)
    if last >= 10_000:  # the paper labels iterations in units of 1e4
        axes.ticklabel_format(axis="x", style="sci", scilimits=(4, 4))
    axes.grid(alpha=0.3)
    axes.legend(title="dashed: training, bold: test", fontsize=8, title_fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return figure


def _names(runs: list[Path]) -> dict[Path, str]:
    """Each run's directory name, or its path where names repeat."""
    names = [run.resolve().name for run in runs]
    return {run: (name if names.count(name) == 1 else str(run)) for run, name in zip(runs, names, strict=True)}


def register(app: typer.Typer) -> None:
    app.command(name="plot")(plot)
