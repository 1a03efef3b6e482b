"""`resdsl plot RUN_DIR... -o fig.png`: training curves in the style of the paper's Figure 6."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from resdsl.cli.common import atomic_output, fail


def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (each with metrics.jsonl).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The figure to write (.png, .pdf, .svg).")] = Path(
        "curves.png"),
    title: Annotated[str | None, typer.Option(help="A title above the plot.")] = None,
) -> None:
    """Training error dashed, test error bold, against iterations; one colour per run."""
    curves = {run: read_curves(run) for run in runs}
    names = _names(runs)

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
    suffix = output.suffix.lstrip(".") or "png"
    with atomic_output(output) as temp:
        figure.savefig(temp, format=suffix)
    plt.close(figure)
    typer.echo(f"wrote {output}")


def read_curves(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(iteration, train error %) and (iteration, test error %) points of a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        fail(f"{run} is not a run directory: it has no metrics.jsonl")
    train, test = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "train_error" in record:
                train.append((int(record["iteration"]), 100 * float(record["train_error"])))
            if "test_error" in record:
                test.append((int(record["iteration"]), 100 * float(record["test_error"])))
        except (ValueError, KeyError, TypeError):
            fail(f"{path}:{number} is not a metrics line (JSON with iteration and errors)")
    if not train and not test:
        fail(f"{path} has no training or test error to plot yet")
    return train, test


def _names(runs: list[Path]) -> dict[Path, str]:
    """Each run's directory name, or its path where names repeat."""
    names = [run.resolve().name for run in runs]
    return {run: (name if names.count(name) == 1 else str(run)) for run, name in zip(runs, names, strict=True)}


def register(app: typer.Typer) -> None:
    app.command(name="plot")(plot)
