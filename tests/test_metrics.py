"""resdsl.metrics: the metrics.jsonl format, read old and new, bounded, and trimmed for a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resdsl import metrics

OLD = [  # resdsl 0.1 wrote these: no kind, no time
    '{"iteration": 50, "epoch": 0.1, "lr": 0.1, "train_loss": 2.1, "train_error": 0.8, "images_per_s": 900.0}',
    '{"iteration": 100, "epoch": 0.2, "val_error": 0.7, "test_error": 0.71}',
]


def test_records_of_resdsl_0_1_get_their_kind():
    assert [metrics.parse(line.encode())["kind"] for line in OLD] == ["train", "eval"]


def test_a_last_line_without_newline_is_marked_incomplete(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(OLD[0] + "\n" + OLD[1][:20])
    read = list(metrics.lines(path))
    assert [(line.number, line.entry is not None, line.complete) for line in read] == [(1, True, True),
                                                                                       (2, False, False)]


def test_a_line_of_exactly_the_limit_does_not_swallow_the_next(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x" * metrics.MAX_LINE_BYTES + b"\n" + OLD[0].encode() + b"\n")
    read = list(metrics.lines(path))
    assert [(line.number, line.problem) for line in read] == [(1, "a line longer than 64 KiB"), (2, None)]


def test_error_rates_outside_0_to_1_are_refused():
    with pytest.raises(ValueError, match=r"^'test_error' is not an error rate between 0 and 1$"):
        metrics.parse(b'{"iteration": 3, "test_error": 1.5}')


def test_resume_keeps_records_up_to_the_checkpoint_and_drops_unreadable_lines(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    lines = [OLD[0], "\x00\x01 garbage", OLD[1], '{"iteration": 150, "train_error": 0.5}', '{"iteration": 20']
    path.write_text("\n".join(lines))
    warnings: list[str] = []
    metrics.keep_until(path, 100, warnings.append)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["kind"], r["iteration"]) for r in kept] == [("train", 50), ("eval", 100)]
    assert warnings == [f"{path}:2: dropped a line that is not a metrics record (not JSON)",
                        f"{path}:5: dropped a line that is not a metrics record (not JSON)"]
