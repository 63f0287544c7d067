"""The progress lines a run prints where its output is not a terminal, and compare's estimate for the grid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sparsebrain.experiments import progress
from sparsebrain.experiments.config import load_config
from sparsebrain.experiments.progress import Progress, duration, time_left
from sparsebrain.experiments.trainer import train


def test_durations_and_estimates() -> None:
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 3600, 86399)] == ["0s", "1m00s", "1m01s", "59m59s", "1h00m",
                                                                         "23h59m"]  # fmt: skip
    assert time_left(0, 10, 5.0) is None
    assert time_left(4, 10, 8.0) == pytest.approx(12.0) and time_left(10, 10, 8.0) == 0.0


def test_a_line_at_most_every_interval_and_none_when_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    p = Progress(total=10, initial=2, quiet=False, per_step=(64, "samples"), every=0.0)
    asked = []
    for _ in range(3):
        p.step(lambda: asked.append(1) or 1.5)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and len(asked) == 3
    assert lines[-1].startswith("step 5/10 (50%) | loss 1.5000 | ") and " samples/s | elapsed " in lines[-1]
    assert "left" in lines[-1]
    slow = Progress(total=10, initial=0, quiet=False, every=3600.0)
    slow.step(lambda: asked.append(1) or 0.0)
    quiet = Progress(total=10, initial=0, quiet=True, every=0.0)
    quiet.step(lambda: asked.append(1) or 0.0)
    assert capsys.readouterr().out == "" and len(asked) == 3  # the loss is not even read


def test_the_trainer_prints_progress_with_its_throughput(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "EVERY", 0.0)
    cfg = load_config(None, {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 1, "train.batch_size": 256,
                             "train.threads": 1, "sparsity.method": "set", "sparsity.density": 0.5})  # fmt: skip
    train(cfg, tmp_path / "run", quiet=False)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("step ") and "steps/s" in x]
    assert lines, "a progress line per step with the interval at 0"
    assert all(re.search(r"\| loss \d+\.\d{4} \| [\d.]+ steps/s \| [\d.]+k? samples/s \| elapsed ", x) for x in lines)
